"""Do two runs of the six stages give the same figures and files? (refactors keep behaviour)

``benchmarks/stage_outputs.sh TREE OUT [OVERLAY]`` runs prepare -> register with the code of one
source tree in a fresh folder; run it for the code before and after a change, then
``python benchmarks/compare_stage_outputs.py BEFORE AFTER`` prints JSON: every file that is
byte-identical, and for the others whether only what may differ differs. What may differ is
time (``seconds``, ``cw_seconds``, the cost lines of the model card), MLflow's run ids and the
checkpoints' ``run_key``, which hashes the code on purpose (a checkpoint of other code is not
resumed). Model weights are compared tensor by tensor; anything else that differs is listed, and
the exit status is 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

# Keys whose values are clocks or ids, never figures.
VOLATILE_KEYS = frozenset(
    {"seconds", "cw_seconds", "seconds_per_attack", "run_key", "run_id", "train_seconds"}
)
# Model-card lines that report the wall clock and what it cost, and the run and commit ids.
VOLATILE_LINES = (
    "- Wall time:",
    "- Adversarial training took",
    "- Robust accuracy gained",
    "- mlflow_run:",
    "- git_commit:",
)
# The inputs (an overlay names its tree) and the MLflow store (its run ids and times).
SKIPPED = {"hashes.txt", "mlflow.db", "overlay.yaml"}


def differences(before: Any, after: Any, path: str = "") -> list[str]:
    """Where two loaded values differ, volatile keys aside."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = [f"{path}/{k}: in one only" for k in set(before) ^ set(after)]
        for key in set(before) & set(after):
            if str(key) not in VOLATILE_KEYS:
                found += differences(before[key], after[key], f"{path}/{key}")
        return found
    if isinstance(before, list | tuple) and isinstance(after, list | tuple):
        if len(before) != len(after):
            return [f"{path}: length {len(before)} -> {len(after)}"]
        return [
            d
            for i, pair in enumerate(zip(before, after, strict=True))
            for d in differences(*pair, f"{path}[{i}]")
        ]
    if torch.is_tensor(before) and torch.is_tensor(after):
        same = before.dtype == after.dtype and torch.equal(before, after)
        return [] if same else [f"{path}: tensor differs"]
    return [] if before == after else [f"{path}: {before!r:.60} -> {after!r:.60}"]


def kept_lines(path: Path) -> set[str]:
    """A text file's lines but its comments, cost lines and time columns (of a CSV history)."""
    lines = path.read_text().splitlines()
    if path.suffix == ".csv":
        header = lines[0].split(",")
        timed = {i for i, name in enumerate(header) if "seconds" in name}
        lines = [",".join(v for i, v in enumerate(ln.split(",")) if i not in timed) for ln in lines]
    if path.suffix == ".yaml":
        lines = [ln.split("#")[0].rstrip() for ln in lines]
    return {ln for ln in lines if not ln.startswith(VOLATILE_LINES)}


def compare_file(before: Path, after: Path) -> list[str]:
    if before.read_bytes() == after.read_bytes():
        return []
    if before.suffix == ".json":
        return differences(json.loads(before.read_text()), json.loads(after.read_text()))
    if before.suffix == ".pt":
        load = lambda p: torch.load(p, map_location="cpu", weights_only=False)  # noqa: E731
        return differences(load(before), load(after))
    if before.suffix in (".yaml", ".csv", ".md"):
        kept_before, kept_after = kept_lines(before), kept_lines(after)
        return [] if kept_before == kept_after else [f"text differs: {kept_before ^ kept_after}"]
    return ["bytes differ"]


def compare(before_root: Path, after_root: Path) -> dict:
    def files(root: Path) -> set[str]:
        return {
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file()
            and p.name not in SKIPPED
            and not p.name.startswith("log-")
            and not {".git", "mlruns"} & set(p.relative_to(root).parts)
        }

    names = files(before_root) | files(after_root)
    report: dict = {"identical": [], "same_figures": [], "different": {}}
    for name in sorted(names):
        if not (before_root / name).exists() or not (after_root / name).exists():
            report["different"][name] = ["in one run only"]
            continue
        found = compare_file(before_root / name, after_root / name)
        if found:
            report["different"][name] = found[:10]
        elif (before_root / name).read_bytes() == (after_root / name).read_bytes():
            report["identical"].append(name)
        else:
            report["same_figures"].append(name)
    return report


if __name__ == "__main__":
    result = compare(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps(result, indent=2))
    sys.exit(1 if result["different"] else 0)
