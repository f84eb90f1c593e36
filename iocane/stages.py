"""DVC stage entry points: ``python -m iocane.stages STAGE``.

Each stage calls the same plain function as the Prefect task of the same name. A failed gate
exits non-zero, so ``dvc repro`` stops before ``register`` and nothing is promoted; its verdict
is already in metrics/gate.json.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from iocane.base.config import Config, load_config
from iocane.base.errors import GATE_FAILED, exit_code_for, report_error
from iocane.base.interrupts import stop_on_signals
from iocane.base.layout import Layout
from iocane.base.locks import project_lock
from iocane.base.logs import setup_console_logging
from iocane.base.orphans import die_with_parent

# Each stage is ``tasks.<stage>.run_<stage>``, imported when that stage runs: a stage process loads
# what its stage needs (the train stage has no use for MLflow, the gate none for torch).
STAGE_NAMES = ("prepare", "warmup", "train", "evaluate", "gate", "register")
# The stages that train or attack: a process of their own flushes subnormal floats from its start.
TORCH_STAGES = ("warmup", "train", "evaluate")


def stage_function(stage: str) -> Callable[[Config, Layout], object]:
    return getattr(importlib.import_module(f"tasks.{stage}"), f"run_{stage}")


def main(argv: list[str] | None = None, *, own_process: bool = False) -> int:
    """Run one stage; ``own_process`` when this process is the stage's alone (``python -m``), not a
    caller's (a test, a notebook), whose floating-point mode it may then set."""
    parser = argparse.ArgumentParser(prog="python -m iocane.stages", description=__doc__)
    parser.add_argument("stage", choices=STAGE_NAMES)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    if own_process and args.stage in TORCH_STAGES:
        from iocane.training.hardware import flush_subnormals_in_this_process

        flush_subnormals_in_this_process()
    if os.environ.get("DVC_STAGE"):
        # Started by `dvc repro` (DVC names the stage in its command's environment, and its
        # shell execs the one-line command, so the parent is dvc): a SIGKILLed dvc takes its
        # stage along, rather than leaving it to write outputs that nothing will record.
        die_with_parent(os.getppid())
    setup_console_logging()
    try:
        config = load_config(args.params)
        layout = Layout(Path.cwd())
        with stop_on_signals(), project_lock(layout.run_lock, f"stage {args.stage}"):
            result = stage_function(args.stage)(config, layout)
    except Exception as error:  # mapped to a documented exit code with a one-line message
        report_error(error)
        return exit_code_for(error)
    if args.stage == "gate" and not result["passed"]:
        print("gate failed: see metrics/gate.json; nothing will be registered", file=sys.stderr)
        return GATE_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main(own_process=True))
