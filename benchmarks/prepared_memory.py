"""Peak memory of ``prepare`` and of training on a large image folder (issue 18's 100,000 64x64
RGB images), with the prepared data stored compactly (uint8 ``.npy`` files, memory-mapped).

Writes a seeded folder of PNG images (ten classes, one subfolder each) in a temporary directory
under /tmp, in two processes, then runs the real stages as a user's ``dvc repro`` would, each in
its own process in a temporary project: ``python -m iocane.stages prepare`` (``data.dataset:
folder``), then ``python -m iocane.stages warmup`` (one natural epoch of ``madry_cnn`` at width 2
over the whole training split, with its clean validation). Each process's peak resident set is
its ``ru_maxrss`` (from ``os.wait4``), which counts the pages of the memory-mapped arrays it
touched. Prints one JSON document and writes it to benchmarks/results; the temporary directory
is removed afterwards.

    nice .venv/bin/python benchmarks/prepared_memory.py [--images 100000] [--side 64]

The figure to quote is the ratio of a stage's peak RSS to the size the images would take as
float32 (what ``load_prepared`` used to hold, before any copy).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10
CHUNK = 500  # images per task of the writing pool
FIXED_COST_IMAGES = 200


def _write_chunk(task: tuple[Path, int, int, int, int, int]) -> int:
    """Images ``start`` to ``start + count`` of one class: a colour gradient of the class, a
    random blob and noise, as PNG (fast compression: the benchmark is about reading them)."""
    root, label, start, count, side, seed = task
    generator = np.random.default_rng([seed, label, start])
    ramp = np.linspace(0, 1, side, dtype=np.float32)
    hue = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256], np.float32)
    base = hue * ramp[:, None, None] + (255 - hue) * ramp[None, :, None] * 0.5
    yy, xx = np.mgrid[:side, :side]
    folder = root / f"class_{label:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(start, start + count):
        cy, cx = generator.integers(8, side - 8, 2).tolist()
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < (side // 6) ** 2)[..., None] * 60.0
        noise = generator.normal(0, 12, (side, side, 3))
        pixels = np.clip(base * 0.7 + blob + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:06d}.png", compress_level=1)
    return count


def write_folder(root: Path, images: int, side: int, seed: int, processes: int) -> None:
    per_class = images // CLASSES
    tasks = [
        (root, label, start, min(CHUNK, per_class - start), side, seed)
        for label in range(CLASSES)
        for start in range(0, per_class, CHUNK)
    ]
    with Pool(processes) as pool:
        written = sum(pool.imap_unordered(_write_chunk, tasks))
    assert written == per_class * CLASSES


def measured(command: list[str], cwd: Path, env: dict[str, str]) -> dict:
    """Run ``command`` to completion; its wall seconds and peak RSS (bytes), or an error."""
    started = time.perf_counter()
    log = cwd / f"{command[-1]}.log"
    with log.open("w") as stream:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=stream, stderr=stream)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{log.read_text()[-3000:]}")
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
    }


def run_stages(root: Path, project: Path, args: argparse.Namespace) -> dict:
    """prepare, then warmup, on the image folder ``root``, in a fresh project directory."""
    project.mkdir()
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"].update(dataset="folder", root=str(root), limit_train=0, limit_test=0)
    params["model"].update(name="madry_cnn", width=args.width)
    params["warmup"].update(epochs=1, batch_size=128)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": args.code, "OMP_NUM_THREADS": "1"}
    stage = [sys.executable, "-m", "iocane.stages"]
    prepare = measured([*stage, "prepare"], project, env)
    prepared = project / "data" / "prepared"
    return {
        "meta": json.loads((prepared / "meta.json").read_text()),
        "files": {path.name: path.stat().st_size for path in sorted(prepared.glob("*.npy"))},
        "prepare": prepare,
        "training": measured([*stage, "warmup"], project, env),
        "history": (project / "plots" / "warmup.csv").read_text().strip().splitlines(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=2, help="for writing the images")
    parser.add_argument("--width", type=int, default=2, help="madry_cnn's width for training")
    parser.add_argument("--code", default=str(PROJECT_ROOT), help="the iocane checkout to run")
    parser.add_argument("--out", default=None, help="result file (default benchmarks/results)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="iocane-prepared-memory-", dir="/tmp") as temp:
        # The same stages on 200 images: what the processes take whatever the data (Python,
        # torch and its libraries), so that the data's share can be told apart.
        write_folder(Path(temp) / "few", FIXED_COST_IMAGES, args.side, args.seed, args.processes)
        fixed = run_stages(Path(temp) / "few", Path(temp) / "few-project", args)
        started = time.perf_counter()
        write_folder(Path(temp) / "images", args.images, args.side, args.seed, args.processes)
        write_seconds = round(time.perf_counter() - started, 1)
        large = run_stages(Path(temp) / "images", Path(temp) / "project", args)
    meta = large["meta"]
    pixels = sum(meta["counts"].values()) * meta["in_channels"] * meta["image_size"] ** 2
    float32 = 4 * pixels
    stages = ("prepare", "training")
    result = {
        "benchmark": "prepared_memory",
        "date": datetime.date.today().isoformat(),
        "images": args.images,
        "image_shape": [meta["in_channels"], meta["image_size"], meta["image_size"]],
        "counts": meta["counts"],
        "prepared_files_bytes": large["files"],
        "uint8_images_bytes": pixels,
        "float32_images_bytes": float32,
        "write_folder_seconds": write_seconds,
        "prepare": large["prepare"],
        "training": {
            **large["training"],
            "what": f"warmup stage: 1 natural epoch of madry_cnn width {args.width} over the "
            "whole training split, batch 128, clean validation on the whole validation split",
        },
        "fixed_cost": {
            "what": f"the same stages on {FIXED_COST_IMAGES} images",
            **{stage: fixed[stage] for stage in stages},
        },
        # The figures to quote: peak RSS over the images' float32 size, whole and data's share.
        "peak_rss_over_float32": {
            stage: round(large[stage]["peak_rss_bytes"] / float32, 3) for stage in stages
        },
        "peak_rss_above_fixed_cost_over_float32": {
            stage: round(
                (large[stage]["peak_rss_bytes"] - fixed[stage]["peak_rss_bytes"]) / float32, 3
            )
            for stage in stages
        },
        "warmup_history": large["history"],
        "machine": {"cpus": os.cpu_count(), "memory_bytes": _memory_bytes()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    out = (
        Path(args.out)
        if args.out
        else PROJECT_ROOT / "benchmarks" / "results" / (f"prepared-memory-{result['date']}.json")
    )
    out.write_text(text + "\n")


def _memory_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    main()
