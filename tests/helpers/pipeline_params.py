"""A tiny but real pipeline configuration for the end-to-end tests (about 20 s of compute)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers.paths import PROJECT_ROOT

TINY_OVERRIDES = {
    "data": {"limit_train": 600},
    "warmup": {"epochs": 2},
    "train": {"epochs": 2, "eps_ramp_epochs": 1, "steps": 3, "step_size": 0.05},
    # No threat profile: the tests that want one (tests/e2e/test_flow.py) name theirs. The
    # certified band by IBP alone (under a second here; CROWN adds seconds per model).
    "evaluate": {
        "n_samples": 120,
        "preset": "quick",
        "threats": {},
        "certify": {"bounds": ["ibp"], "smoothing": None},
    },
    # Reachable thresholds: these tests check the wiring, not the model quality.
    "gate": {"min_clean_accuracy": 0.3, "max_clean_drop": 1.0, "min_robust_accuracy": 0.05},
    "registry": {"model_name": "iocane-test"},
}

# Version tags DESIGN.md promises other tools.
CONTRACT_VERSION_TAGS = (
    "gate",
    "threat_model",
    "eps",
    "clean_accuracy",
    "robust_accuracy",
    "data_fingerprint",
    "git_commit",
)


def write_tiny_params(path: Path, **sections: dict) -> Path:
    """The project's params.yaml with the tiny overrides (and any given sections) applied."""
    document = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    for overrides in (TINY_OVERRIDES, sections):
        for section, values in copy.deepcopy(overrides).items():
            document[section].update(values)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run_iocane(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The ``iocane`` command as a user runs it, in ``project``, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "iocane.cli", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
