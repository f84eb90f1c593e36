"""``iocane run`` against an MLflow server that requires a login (``deploy/dev-services start
--auth``: MLflow's basic-auth app, its users in PostgreSQL).

A wrong or missing login exits 2 with one line that says so, before any training. With the
right login the run registers, and the password is nowhere in what the run leaves: not in the
project, not in its output, not in the artifact store, not in the MLflow or Prefect databases.
The credentials reach MLflow's client through its own variables only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import services as dev_services
from tests.helpers.pipeline_params import run_iocane, write_tiny_params

NAME = "iocane-services-auth"
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def auth_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A set of services of this module's own, MLflow behind basic-auth. Its state is under
    /tmp, not pytest's 0700 tmp: the PostgreSQL user must reach it."""
    directory = Path(tempfile.mkdtemp(prefix="iocane-services-auth-"))
    directory.chmod(0o755)
    record = dev_services.start(directory / "state", "--auth")
    try:
        yield dev_services.client_environment(record)
    finally:
        if record["ok"]:
            dev_services.stop(directory / "state")
        shutil.rmtree(directory, ignore_errors=True)


def _project(tmp_path: Path) -> Path:
    write_tiny_params(
        tmp_path / "params.yaml", evaluate={"n_samples": 60}, registry={"model_name": NAME}
    )
    return tmp_path


@pytest.mark.parametrize(
    ("credentials", "says"),
    [
        ({}, "needs a login: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
        ({"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "not-it"}, "refused"),
        ({"MLFLOW_TRACKING_USERNAME": "nobody", "MLFLOW_TRACKING_PASSWORD": "x"}, "refused"),
    ],
    ids=["missing", "wrong-password", "unknown-user"],
)
def test_a_refused_login_exits_2_before_any_training(
    auth_services: dict[str, str], tmp_path: Path, credentials: dict[str, str], says: str
) -> None:
    project = _project(tmp_path)
    completed = run_iocane(
        project, dev_services.user_environment(project, auth_services, **credentials), "run"
    )
    assert completed.returncode == 2, completed.stderr[-3000:]
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], completed.stderr[-3000:]
    assert auth_services["MLFLOW_TRACKING_URI"] in errors[0]
    assert "Traceback" not in completed.stderr
    assert completed.stdout == ""
    # Before any training: nothing prepared, trained or cached.
    assert sorted(path.name for path in project.iterdir()) == ["params.yaml"]


def _holders(needle: bytes, *roots: Path, leave_out: tuple[Path, ...] = ()) -> list[str]:
    """The files under ``roots`` whose bytes contain ``needle``."""
    files = [path for root in roots for path in root.rglob("*") if path.is_file()]
    return [
        str(path)
        for path in files
        if not path.is_symlink() and path not in leave_out and needle in path.read_bytes()
    ]


def _dump(services: dict[str, str], database: str) -> bytes:
    """pg_dump of one database, as text: every row the servers wrote."""
    state = Path(services["state"])
    bindir = Path(json.loads((state / "services.json").read_text())["postgres_bin"])
    completed = subprocess.run(
        [str(bindir / "pg_dump"), "--data-only", f"{services['postgres_url']}/{database}"],
        capture_output=True,
        check=True,
    )
    return completed.stdout


def test_the_right_login_registers_and_the_password_is_nowhere(
    auth_services: dict[str, str], tmp_path: Path
) -> None:
    project = _project(tmp_path)
    credentials = {key: auth_services[key] for key in CREDENTIALS}
    password = credentials["MLFLOW_TRACKING_PASSWORD"].encode()
    completed = run_iocane(
        project, dev_services.user_environment(project, auth_services, **credentials), "run"
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    assert (result["gate"], result["alias"]) == ("passed", "champion")

    state = Path(auth_services["state"])
    admin_password_file = state / "mlflow-admin.password"
    # The search finds the password where it is kept (so a miss below is no blind spot)...
    assert _holders(password, state) == [str(admin_password_file)]
    # ...and nowhere else: the project (params, metrics, reports, logs, Prefect's results and
    # cache), the run's output, the artifacts, the servers' logs, the databases' files.
    assert _holders(password, project, state, leave_out=(admin_password_file,)) == []
    assert password not in completed.stdout.encode() + completed.stderr.encode()
    # The databases: each dump holds the run's rows (the model's name, the flow run's project).
    for database, row in (("mlflow", NAME), ("prefect", str(project))):
        dump = _dump(auth_services, database)
        assert row.encode() in dump, f"the {database} dump lacks the run: the search is blind"
        assert password not in dump, f"the password is in the {database} database"
