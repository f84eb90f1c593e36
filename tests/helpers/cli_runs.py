"""The CLI in a child process, to see what a bad input costs before any work starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import PROJECT_ROOT

# Runs the CLI, then prints to stderr which heavy modules it had imported (a sorted list).
_REPORT_HEAVY_IMPORTS = (
    "import sys; from iocane.cli import main; code = main(sys.argv[1:]); "
    "heavy = {'torch', 'prefect', 'mlflow'} & set(sys.modules); "
    "print(sorted(heavy), file=sys.stderr); sys.exit(code)"
)


def run_cli_with_project_params(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``iocane <args>`` in ``project`` (given the project's params.yaml); the last line of its
    stderr lists the heavy modules (torch, Prefect, MLflow) it imported."""
    (project / "params.yaml").write_text((PROJECT_ROOT / "params.yaml").read_text())
    return subprocess.run(
        [sys.executable, "-c", _REPORT_HEAVY_IMPORTS, *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
