"""The `harden` flow four times in one fresh project: first run, unchanged rerun, eps change,
then the first configuration again (the revisit, restored from the stage store).

Prints one JSON document: each run's wall time, the state of every task (``Cached`` or
``Completed``), the version it returned, the ratios of the later runs' times to the first, and
how many versions the registry holds (two: the revisit returns version 1). The runs go through a
real Prefect API (a temporary one unless PREFECT_API_URL is set) and a sqlite MLflow registry in
the temporary project.

    .venv/bin/python benchmarks/flow_cache.py [--set train.epochs=5 ...] [--changed train.eps=0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _task_states(flow_run_id) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))
    return {run.name.rsplit("-", 1)[0]: run.state_name for run in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument(
        "--changed", default="train.eps=0.05", help="the third run's change (the fourth goes back)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        project = Path(directory)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlflow.db'}"
        os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(project / ".prefect" / "storage")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
        from flows.harden import harden
        from iocane.base.logs import setup_console_logging

        setup_console_logging()
        runs = []
        for label, overrides in (
            ("first", args.set),
            ("unchanged", args.set),
            (f"changed {args.changed}", [*args.set, args.changed]),
            ("revisit", args.set),
        ):
            started = time.perf_counter()
            state = harden(
                params_path=str(PROJECT_ROOT / "params.yaml"),
                overrides=overrides,
                project_root=str(project),
                return_state=True,
            )
            seconds = time.perf_counter() - started
            result = state.result()
            runs.append(
                {
                    "run": label,
                    "seconds": round(seconds, 1),
                    "tasks": _task_states(state.state_details.flow_run_id),
                    "version": result["version"],
                    "alias": result["alias"],
                    "robust_accuracy": result["robust_accuracy"],
                }
            )
        from mlflow import MlflowClient

        name = result["registered_model"]
        versions = len(MlflowClient().search_model_versions(f"name='{name}'"))
    first = runs[0]["seconds"]
    print(
        json.dumps(
            {
                "benchmark": "flow_cache",
                "overrides": args.set,
                "runs": runs,
                "unchanged_over_first": round(runs[1]["seconds"] / first, 4),
                "changed_over_first": round(runs[2]["seconds"] / first, 3),
                "revisit_over_first": round(runs[3]["seconds"] / first, 4),
                "revisit_version": runs[3]["version"],
                "registered_versions": versions,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
