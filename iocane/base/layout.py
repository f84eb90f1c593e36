"""Where each stage reads and writes, relative to the project root.

dvc.yaml declares the same paths as stage outputs; ``tests/e2e/test_dvc.py`` checks that the two
agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The arrays the prepare stage writes, one ``<name>.npy`` file each under data/prepared.
PREPARED_ARRAYS = tuple(
    f"{split}_{kind}" for split in ("train", "val", "test") for kind in ("images", "labels")
)


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def prepared_dir(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def prepared_arrays(self) -> dict[str, Path]:
        """The prepared arrays' files by array name (images uint8, or float32 for digits)."""
        return {name: self.prepared_dir / f"{name}.npy" for name in PREPARED_ARRAYS}

    @property
    def prepared_meta(self) -> Path:
        return self.prepared_dir / "meta.json"

    def checkpoint_dir(self, stage: str) -> Path:
        return self.root / "checkpoints" / stage

    def model_file(self, stage: str) -> Path:
        """The stage's final weights (state_dict and model spec), loaded with weights_only."""
        return self.checkpoint_dir(stage) / "model.pt"

    def metrics_file(self, stage: str) -> Path:
        return self.root / "metrics" / f"{stage}.json"

    def history_file(self, stage: str) -> Path:
        """Per-epoch figures as CSV: DVC plots them, MLflow gets them as step metrics."""
        return self.root / "plots" / f"{stage}.csv"

    @property
    def curves_file(self) -> Path:
        """Accuracy-vs-eps curves (Linf and L2, natural and hardened) as numbers."""
        return self.root / "plots" / "robustness_curves.json"

    @property
    def curves_plot(self) -> Path:
        return self.root / "plots" / "robustness_curves.png"

    @property
    def examples_plot(self) -> Path:
        """Clean test images over their adversarial versions, with predictions."""
        return self.root / "plots" / "adversarial_examples.png"

    @property
    def alignment_plot(self) -> Path:
        """Input gradients and large-eps targeted images, natural beside hardened model."""
        return self.root / "plots" / "perceptual_alignment.png"

    @property
    def threat_plot(self) -> Path:
        """Accuracy per threat (the threat profile), natural beside hardened model."""
        return self.root / "plots" / "threat_profile.png"

    @property
    def evaluation_plots(self) -> tuple[Path, ...]:
        """The evaluation's figures, in the order the run's artifacts list them."""
        return (self.curves_plot, self.examples_plot, self.alignment_plot, self.threat_plot)

    @property
    def report_file(self) -> Path:
        return self.root / "reports" / "robustness.md"

    @property
    def registration_file(self) -> Path:
        return self.root / "reports" / "registration.json"

    @property
    def model_card_file(self) -> Path:
        return self.root / "reports" / "model_card.md"

    @property
    def run_lock(self) -> Path:
        """Held by the run working in this project (see ``iocane.base.locks.project_lock``)."""
        return self.root / ".iocane" / "run.lock"

    @property
    def stage_cache_dir(self) -> Path:
        """The stages' outputs by content and the record of each run (``iocane.pipeline.store``)."""
        return self.root / ".iocane" / "cache"
