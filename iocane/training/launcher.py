"""Data-parallel adversarial training: PyTorch DDP in N processes started by ``torchrun``; this
module is both the launcher (``launch``, what the train stage calls) and what torchrun runs in
each rank (``rank_main``). The ranks' place and collectives are ``iocane.training.ranks``.

``train.nproc=N`` makes the ``train`` stage (the Prefect task and the DVC stage alike) start
``torchrun --standalone --nproc-per-node N -m iocane.training.launcher`` and wait for it. Each
process (a rank) trains the same model on its own shard of every global batch of
``train.batch_size`` images: it crafts the adversarial examples of its shard only, and DDP averages
the weight gradients, so an optimiser step sees the gradient of the whole global batch, as one
process would. The backend is gloo on CPU and NCCL on CUDA (one GPU per rank).

Only rank 0 writes: checkpoints, the model file, the history and the metrics; nothing in this
stage talks to MLflow (the register stage and the attempt's run log what rank 0 wrote). The
per-epoch validation attack is sharded too, and its sums are added up over the ranks.

What differs from one process, so results match within a tolerance rather than to the bit:
the random starts of the attacks are drawn per shard, batch norm computes its statistics per
shard (the running statistics are rank 0's), a global batch smaller than 2 x N images at the end
of an epoch is skipped, and gradients are summed in another order.

Stopping: the launcher runs torchrun in its own session, so a Ctrl-C reaches the ranks once,
forwarded, not twice; the ranks agree after every step whether one of them was asked to stop,
so all stop at the same step and rank 0 saves that point. If the launcher is SIGKILLed, torchrun
and the ranks die with it (Linux parent-death signals) instead of training on unobserved.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch.distributed as dist

from iocane.base.config import Config, config_from_dict, load_config
from iocane.base.errors import (
    EXPLAINED_ERRORS,
    NotLearning,
    TrainingDiverged,
    exit_code_for,
    report_error,
)
from iocane.base.files import write_json
from iocane.base.interrupts import Interrupted, safe_stop_section, stop_on_signals, stop_requested
from iocane.base.layout import Layout
from iocane.base.logs import setup_console_logging
from iocane.base.orphans import die_with_parent
from iocane.base.settings import settings
from iocane.training.hardware import flush_subnormals_in_this_process
from iocane.training.ranks import DistributedTrainingFailed, rank_device, ranks_from_environment

log = logging.getLogger("iocane")


# Set for the ranks the train stage starts: the stage prints the one error line, not each rank.
LAUNCHED = "IOCANE_DDP_LAUNCHED"


def _work_dir(layout: Layout) -> Path:
    return layout.root / ".iocane" / "ddp"


def _result_file(layout: Layout, rank: int) -> Path:
    return _work_dir(layout) / f"rank-{rank}.json"


def _pid_file(layout: Layout, rank: int) -> Path:
    return _work_dir(layout) / f"rank-{rank}.pid"


def _forward(signal_name: str, layout: Layout, nproc: int, torchrun: subprocess.Popen) -> None:
    """Hand a stop request to the ranks themselves, once each. Through torchrun it would work
    too, but torchrun answers a signal with a traceback of its own and a second signal to the
    ranks after its grace period."""
    number = signal.Signals[signal_name]
    pids = [_pid_file(layout, rank) for rank in range(nproc)]
    if not all(path.exists() for path in pids):  # not all started yet: torchrun passes it on
        torchrun.send_signal(number)
        return
    for path in pids:
        with contextlib.suppress(ProcessLookupError):  # that rank has already finished
            os.kill(int(path.read_text()), number)


def torchrun_command(nproc: int, params_file: Path) -> list[str]:
    """The command the launcher runs; run it yourself from the project root to train a params
    file's ``train`` stage under DDP (add ``--nnodes`` and a rendezvous for several machines)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "iocane.training.launcher",
        "--params",
        str(params_file),
    ]


def launch(config: Config, layout: Layout) -> None:
    """Train the ``train`` stage in ``config.train.nproc`` processes and wait for them. Raises
    what the first rank to fail raised: ``Interrupted`` after a signal (rank 0 saved the point
    all ranks stopped at), ``TrainingDiverged``, ``NotLearning``, or
    ``DistributedTrainingFailed``."""
    work = _work_dir(layout)
    work.mkdir(parents=True, exist_ok=True)
    for stale in [*work.glob("rank-*.json"), *work.glob("rank-*.pid")]:
        stale.unlink()
    params_file = work / "params.json"
    write_json(params_file, config.to_dict())  # the resolved params, --set overrides included
    nproc = config.train.nproc
    env = dict(os.environ)
    # One share of the cores per rank (torchrun would otherwise set 1 and say so).
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    env[LAUNCHED] = "1"
    command = torchrun_command(nproc, params_file.relative_to(layout.root))
    log.info("train: %d data-parallel processes: %s", nproc, " ".join(command[1:]))
    process = subprocess.Popen(
        # torchrun dies with this process (and the ranks with torchrun, see rank_main)
        [sys.executable, "-m", "iocane.base.orphans", str(os.getpid()), *command],
        cwd=layout.root,
        env=env,
        start_new_session=True,  # a Ctrl-C reaches this process only, which forwards it once
    )
    forwarded: str | None = None
    try:
        with safe_stop_section():  # the first signal is forwarded, a second one kills
            while process.poll() is None:
                if stop_requested() and forwarded is None:
                    forwarded = stop_requested()
                    _forward(forwarded, layout, nproc, process)
                time.sleep(0.1)
    except Interrupted:
        if process.poll() is None:  # a second signal: stop now, ranks and all
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
        # else the first one, which the ranks honoured: their reports say where they stopped
    except BaseException:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        raise
    failure = _failure(layout, nproc, process.returncode, forwarded)
    if failure is not None:
        raise failure


def _failure(
    layout: Layout, nproc: int, returncode: int, forwarded: str | None
) -> Exception | None:
    """The error of the first rank that failed (the others usually fail after it, because it
    left the gradient exchange), or None when all of them finished their training."""
    results = []
    for rank in range(nproc):
        path = _result_file(layout, rank)
        if path.exists():
            results.append(json.loads(path.read_text()))
    failed = sorted((r for r in results if r["error"]), key=lambda r: r["time"])
    if returncode == 0 and len(results) == nproc and not failed:
        if forwarded is None:
            return None
        # The signal came as the last step ended: the model is whole, but the run stops here.
        return Interrupted(
            forwarded, f"train: stopped by {forwarded} after training ended; its model is saved"
        )
    interrupted = [r for r in failed if r["kind"] == "Interrupted"]
    if forwarded is not None or interrupted:
        first = interrupted[0] if interrupted else None
        message = first["error"] if first else f"train: stopped by {forwarded}"
        return Interrupted(first["signal"] if first else forwarded, message)
    if not failed:
        return DistributedTrainingFailed(
            f"train: torchrun exited with code {returncode} and no rank said why; "
            "its output is above"
        )
    first = failed[0]
    if first["kind"] == "TrainingDiverged":
        return TrainingDiverged(first["error"])
    if first["kind"] == "NotLearning":
        return NotLearning(first["error"])
    return DistributedTrainingFailed(f"train: rank {first['rank']} failed: {first['error']}")


# ---------------------------------------------------------------------------------------------
# A rank: what torchrun starts.


def rank_main(argv: list[str] | None = None) -> int:
    flush_subnormals_in_this_process()  # a rank's process is iocane's alone (torchrun starts it)
    parser = argparse.ArgumentParser(prog="python -m iocane.training.launcher")
    parser.add_argument("--params", required=True, help="a params file (YAML or JSON)")
    args = parser.parse_args(argv)
    die_with_parent(os.getppid())  # torchrun's death (so the launcher's) ends the rank
    ranks = ranks_from_environment()
    # The other ranks compute what rank 0 computes: their lines would be copies.
    setup_console_logging(logging.INFO if ranks.writes else logging.ERROR)
    layout = Layout(Path.cwd())
    result = {"rank": ranks.rank, "error": None, "kind": None, "signal": None}
    code = 0
    try:
        # A stop request before training is a request too, honoured after the first step, when
        # every rank stops at once: a rank that left on it before the rendezvous would leave the
        # others waiting in init_process_group, where no Python handler runs (seen on a loaded
        # machine: rank 0 gone, rank 1 waiting for gloo's 30-minute timeout). The pid file is
        # written once the handler is in place: the launcher signals a rank directly only then.
        with stop_on_signals(), safe_stop_section():
            _pid_file(layout, ranks.rank).write_text(str(os.getpid()))
            config = _load_params(Path(args.params))
            # Imported once the handlers are in place, so that a stop request during the slow
            # imports of the engine is a safe stop too (this is no circle: the loop never
            # imports the launcher).
            from iocane.training.loop import train_in_process

            device = rank_device(ranks)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            try:
                train_in_process(config, layout, ranks, device)
            finally:
                dist.destroy_process_group()
    except Exception as error:
        if settings().ddp_launched is None:
            report_error(error)
        elif not isinstance(error, EXPLAINED_ERRORS):
            traceback.print_exception(error)  # a bug: the launcher's line will not say where
        code = exit_code_for(error)
        result.update(error=str(error), kind=type(error).__name__)
        if isinstance(error, Interrupted):
            result["signal"] = error.signal_name
    result["time"] = time.time()
    write_json(_result_file(layout, ranks.rank), result)
    # A stop that saved its point is a clean end for torchrun (which would otherwise report a
    # failed worker); the report above is what the launcher reads.
    return 0 if result["kind"] == "Interrupted" else code


def _load_params(path: Path) -> Config:
    # JSON is not read as YAML: json writes 1e-05 where PyYAML expects 1.0e-05, and would
    # read the launcher's resolved params as text.
    if path.suffix == ".json":
        return config_from_dict(json.loads(path.read_text()))
    return load_config(str(path))


if __name__ == "__main__":
    sys.exit(rank_main())
