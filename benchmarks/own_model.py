"""Your own model on your own images, end to end: Fashion-MNIST as a PNG image folder, a
torchvision network trained naturally here, then hardened from those weights by ``iocane run``.

1. Export Debian's Fashion-MNIST (``/usr/share/datasets/fashion-mnist``, read by iocane's IDX
   reader) to ``images/train/<class>/`` and ``images/test/<class>/`` PNG files. The class folders
   are ``<label>_<name>`` so that their sorted order is the label order, and each file is named by
   its index in the IDX file.
2. Check that the folder and the built-in ``fashion_mnist`` loader give the same images. The
   folder is read class by class, then file by file; the built-in keeps the IDX order. Because
   the files are named by IDX index, the folder's order is exactly the built-in order sorted
   stably by label: the check compares the two raw datasets byte for byte in that order (images
   and labels, both splits) and reports the sha256 of each.
3. Train ``torchvision:<builder>`` naturally with a plain PyTorch loop on a seeded subset of the
   training images (normalised by that subset's mean and std, the grey plane repeated to three
   channels as iocane does) and save the bare network's state_dict.
4. Harden it with the real command in a temporary project: ``iocane run`` with
   ``data.dataset: folder``, ``model.name: torchvision:<builder>``, ``model.weights`` and
   ``warmup.epochs: 0`` (the given model is the natural baseline). Prepare is also run alone
   (``python -m iocane.stages prepare``) to measure its peak memory (RSS).

``--grid`` instead compares train.lr x train.eps_ramp_epochs for a start from these weights, in
one process, on the same prepared data and natural model (the measurement behind the defaults
for a start from ``model.weights``). Both print JSON and write it to benchmarks/results/.

    nice -n 5 .venv/bin/python benchmarks/own_model.py [--grid] [--quick] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from torch import nn

from iocane.base.config import load_config
from iocane.base.files import read_json
from iocane.base.logs import setup_console_logging
from iocane.data.folder import FolderOptions
from iocane.data.raw import RawDataset
from iocane.data.sources import load_raw_dataset

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
FASHION_ROOT = "/usr/share/datasets/fashion-mnist"
BUILDER = "resnet18"
SEED = 0

# The hardening run: the sizes keep the benchmark near 15 minutes on 2 shared CPU cores.
# train.lr and train.eps_ramp_epochs are left to the defaults (what --grid measures).
HARDEN = {
    "data": {"dataset": "folder", "root": "images", "limit_train": 2000, "limit_test": 2000},
    "warmup": {"epochs": 0},
    "train": {"epochs": 2},
    "evaluate": {"n_samples": 1000, "preset": "quick"},
    # configs/fashion_mnist.yaml's gate
    "gate": {"min_clean_accuracy": 0.78, "max_clean_drop": 0.12, "min_robust_accuracy": 0.55},
    "registry": {"model_name": "iocane-own-fashion-mnist"},
}
QUICK = {  # --quick: a dry run of the wiring, minutes
    "data": {"limit_train": 300, "limit_test": 200},
    "train": {"epochs": 1, "steps": 2, "eps_ramp_epochs": 0},
    "evaluate": {"n_samples": 60},
}


def class_folder(label: int, name: str) -> str:
    """``<label>_<name>`` with the name made a file name ("T-shirt/top" -> "0_T-shirt_top"):
    sorted, the folders are in label order (ten classes, one digit)."""
    return f"{label}_{name.replace('/', '_').replace(' ', '_')}"


def export_png_folder(raw: RawDataset, root: Path) -> dict:
    """Every image of both splits as ``root/<split>/<class folder>/<IDX index>.png``."""
    started = time.perf_counter()
    folders = [class_folder(label, name) for label, name in enumerate(raw.class_names)]
    counts = {}
    for split, images, labels in (
        ("train", raw.train_images, raw.train_labels),
        ("test", raw.test_images, raw.test_labels),
    ):
        for folder in folders:
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            path = root / split / folders[int(label)] / f"{index:05d}.png"
            Image.fromarray(image[0], mode="L").save(path)
        counts[split] = len(labels)
    return {"images": counts, "seconds": round(time.perf_counter() - started, 1)}


def _digest(images: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def same_images(builtin: RawDataset, folder: RawDataset) -> dict:
    """The built-in arrays in the folder's order (stable sort by label: class, then IDX index,
    which is the file name) against the folder's, byte for byte, per split."""
    splits = {}
    for split in ("train", "test"):
        images, labels = getattr(builtin, f"{split}_images"), getattr(builtin, f"{split}_labels")
        order = np.argsort(labels, kind="stable")
        ours = (images[order], labels[order])
        theirs = (getattr(folder, f"{split}_images"), getattr(folder, f"{split}_labels"))
        splits[split] = {
            "images": len(labels),
            "builtin_sha256": _digest(*ours),
            "folder_sha256": _digest(*theirs),
            "identical": bool(
                ours[0].shape == theirs[0].shape
                and np.array_equal(ours[0], theirs[0])
                and np.array_equal(ours[1], theirs[1])
            ),
        }
    expected = [class_folder(label, name) for label, name in enumerate(builtin.class_names)]
    return {
        "same_images": all(s["identical"] for s in splits.values())
        and list(folder.class_names) == expected,
        "method": "the built-in fashion_mnist arrays sorted stably by label (the folder's order: "
        "class folder, then file name = IDX index) compared byte for byte with the folder's "
        "uint8 arrays; sha256 over the images, then the int64 labels",
        "class_folders": list(folder.class_names),
        "splits": splits,
    }


class _Natural(nn.Module):
    """What iocane puts around a torchvision network for grey images: normalise, repeat the
    plane to three channels, then the network (its state_dict is the one saved)."""

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net, self.mean, self.std = net, mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(((x - self.mean) / self.std).expand(-1, 3, -1, -1))


def train_natural(raw: RawDataset, *, n_images: int, epochs: int, out: Path) -> dict:
    """Natural training of torchvision's BUILDER on a seeded subset; the bare network's
    state_dict goes to ``out``. Plain PyTorch: SGD, momentum 0.9, cosine lr from 0.05."""
    from torchvision import models as tv_models

    started = time.perf_counter()
    generator = torch.Generator().manual_seed(SEED)
    subset = torch.randperm(len(raw.train_labels), generator=generator)[:n_images].numpy()
    images = torch.from_numpy(raw.train_images[subset]).float() / 255
    labels = torch.from_numpy(raw.train_labels[subset])
    mean, std = round(images.mean().item(), 4), round(images.std().item(), 4)
    torch.manual_seed(SEED)
    model = _Natural(tv_models.get_model(BUILDER, weights=None, num_classes=10), mean, std)
    batch, steps = 128, epochs * math.ceil(n_images / 128)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    model.train()
    for _ in range(epochs):
        for batch_index in torch.randperm(n_images, generator=generator).split(batch):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(images[batch_index]), labels[batch_index])
            loss.backward()
            optimizer.step()
            schedule.step()
    torch.save(model.net.state_dict(), out)
    model.eval()
    test = torch.from_numpy(raw.test_images).float() / 255
    with torch.no_grad():
        predicted = torch.cat([model(chunk).argmax(1) for chunk in test.split(500)])
    accuracy = (predicted == torch.from_numpy(raw.test_labels)).float().mean().item()
    return {
        "builder": f"torchvision:{BUILDER}",
        "train_images": n_images,
        "subset": f"the first {n_images} of a permutation of the 60,000 (torch seed {SEED})",
        "epochs": epochs,
        "optimizer": "SGD lr 0.05 (cosine to 0), momentum 0.9, weight decay 5e-4, batch 128",
        "mean": mean,
        "std": std,
        "test_accuracy_all_10000": round(accuracy, 4),
        "seconds": round(time.perf_counter() - started, 1),
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }


def write_project(project: Path, sections: dict) -> None:
    """The project's params.yaml: the repository's with ``sections`` merged in."""
    document = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    for section, values in sections.items():
        document[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def _environment(project: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "PREFECT_HOME": str(project / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": str(PROJECT_ROOT),
    }


def measured_prepare(project: Path) -> dict:
    """``python -m iocane.stages prepare`` alone: its wall time and peak RSS (wait4)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "iocane.stages", "prepare"], cwd=project, env=_environment(project)
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"prepare failed with exit code {process.returncode}")
    meta = read_json(project / "data" / "prepared" / "meta.json")
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "images_read": 70000,
        "counts": meta["counts"],
        "fingerprint": meta["fingerprint"],
    }


def iocane_run(project: Path, overrides: list[str]) -> dict:
    """``iocane run --set ...`` as a user runs it; its JSON summary and the stage times."""
    command = [sys.executable, "-m", "iocane.cli", "run", *(f"--set={o}" for o in overrides)]
    started = time.perf_counter()
    completed = subprocess.run(
        command, cwd=project, env=_environment(project), capture_output=True, text=True
    )
    seconds = round(time.perf_counter() - started, 1)
    if completed.returncode not in (0, 3):  # 3: the gate failed, the figures are still there
        sys.stderr.write(completed.stderr[-5000:])
        raise SystemExit(f"iocane run failed with exit code {completed.returncode}")
    metrics = {s: read_json(project / "metrics" / f"{s}.json") for s in ("warmup", "train")}
    evaluation = read_json(project / "metrics" / "evaluate.json")
    return {
        "command": " ".join(["iocane run", *(f"--set {o}" for o in overrides)]),
        "exit_code": completed.returncode,
        "summary": json.loads(completed.stdout),
        "seconds": {
            "iocane_run_total": seconds,
            "warmup": round(metrics["warmup"]["seconds"], 1),
            "train": round(metrics["train"]["seconds"], 1),
            "evaluate": round(evaluation["seconds"], 1),
        },
        "evaluation": evaluation,
        "train_lr_used": load_config(project / "params.yaml", overrides).train.lr,
        "train_eps_ramp_epochs_used": load_config(
            project / "params.yaml", overrides
        ).train.eps_ramp_epochs,
    }


def _figures(evaluation: dict) -> dict:
    natural = evaluation.get("natural") or {}
    return {
        "natural": {
            "clean_accuracy": natural.get("clean_accuracy"),
            "robust_accuracy": natural.get("robust_accuracy"),
            "attacks": natural.get("attacks"),
        },
        "hardened": {
            "clean_accuracy": evaluation["clean_accuracy"],
            "robust_accuracy": evaluation["robust_accuracy"],
            "attacks": evaluation["attacks"],
            "flags": evaluation["flags"],
        },
        "threat_model": f"{evaluation['threat_model']} eps {evaluation['eps']}",
        "preset": evaluation["preset"],
        "n_samples": evaluation["n_samples"],
    }


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", action="store_true", help="train.lr x eps ramp, not the run")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a dry run")
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the images and weights")
    parser.add_argument("--natural-images", type=int, default=12000)
    parser.add_argument("--natural-epochs", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    return parser.parse_args()


def _natural_model(workdir: Path, builtin: RawDataset, args: argparse.Namespace) -> dict:
    """Export the folder and train the natural model once per workdir (reused by --grid)."""
    record = workdir / "natural.json"
    if record.is_file():
        return json.loads(record.read_text())
    shutil.rmtree(workdir / "images", ignore_errors=True)
    exported = export_png_folder(builtin, workdir / "images")
    natural = train_natural(
        builtin,
        n_images=args.natural_images,
        epochs=args.natural_epochs,
        out=workdir / "natural.pt",
    )
    done = {"export": exported, "natural_training": natural}
    record.write_text(json.dumps(done, indent=2))
    return done


def _project(workdir: Path, made: dict, quick: bool) -> tuple[Path, dict]:
    """A temporary project: the images (a link), the natural weights, and params.yaml with the
    folder data, the torchvision model from those weights and the benchmark's sizes."""
    project = Path(tempfile.mkdtemp(prefix="own-model-", dir=workdir))
    (project / "images").symlink_to(workdir / "images")
    shutil.copy(workdir / "natural.pt", project / "natural.pt")
    natural = made["natural_training"]
    sections = {key: dict(values) for key, values in HARDEN.items()}
    sections["model"] = {
        "name": f"torchvision:{BUILDER}",
        "weights": "natural.pt",
        "mean": [natural["mean"]],  # what the weights were trained with
        "std": [natural["std"]],
    }
    for section, values in (QUICK if quick else {}).items():
        sections[section] = {**sections.get(section, {}), **values}
    write_project(project, sections)
    return project, sections


def main() -> None:
    args = _arguments()
    setup_console_logging()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="own-model-"))
    workdir.mkdir(parents=True, exist_ok=True)
    builtin = load_raw_dataset("fashion_mnist", FASHION_ROOT)
    made = _natural_model(workdir, builtin, args)
    project, sections = _project(workdir, made, args.quick)
    result: dict = {
        "benchmark": "own_model",
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPU cores (shared), torch threads {torch.get_num_threads()}",
        **made,
    }
    if args.grid:
        from own_model_grid import best_cell, run_grid  # beside this file

        result["grid"] = run_grid(project, args.set)
        result["choice"] = best_cell(result["grid"])
        name = "own-model-grid"
    else:
        folder = load_raw_dataset("folder", str(workdir / "images"), folder=FolderOptions())
        result["same_images"] = same_images(builtin, folder)
        del folder
        result["params"] = sections
        result["prepare"] = measured_prepare(project)
        run = iocane_run(project, args.set)
        result["harden"] = {k: v for k, v in run.items() if k != "evaluation"}
        result["figures"] = _figures(run["evaluation"])
        name = "own-model"
    text = json.dumps(result, indent=2)
    print(text)
    if not args.quick:
        (RESULTS / f"{name}-{result['date']}.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
