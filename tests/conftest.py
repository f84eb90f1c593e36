"""Shared fixtures: the project's params, a tiny trained model, isolated Prefect and MLflow."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from tests.helpers import services as shared_services
from tests.helpers.paths import PROJECT_ROOT

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers share the cores: one thread each, in this process and in the stages,
    # servers and CLI runs it starts. Several torch threads per worker on a shared core make
    # small operations many times slower than one.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


SLOW_DIRECTORIES = ("e2e", "faults")  # real processes: flows, dvc repro, servers, kills


# Unit test files that start processes (torchrun ranks): as long as an end-to-end file.
LONG_UNIT_FILES = ("unit/training/test_distributed.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``slow`` marker is set one way: by directory. ``tests/e2e`` and ``tests/faults`` are
    slow; ``tests/unit`` is not (``pytest -m "not slow"`` runs the unit tests).

    The long files run first. xdist hands out whole files (``--dist loadfile``) as workers
    free up, in this order (``--no-loadscope-reorder``; its default puts files with many tests
    first, which left a 90 s file with two tests to start last while the other worker idled):
    the many short unit files then even out the end."""
    tests_dir = Path(__file__).parent

    def long(item: pytest.Item) -> bool:
        relative = Path(item.fspath).relative_to(tests_dir)
        return relative.parts[0] in SLOW_DIRECTORIES or relative.as_posix() in LONG_UNIT_FILES

    for item in items:
        if Path(item.fspath).relative_to(tests_dir).parts[0] in SLOW_DIRECTORIES:
            item.add_marker(pytest.mark.slow)
        if "services" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.services)
    items.sort(key=lambda item: not long(item))  # stable: files keep their order otherwise


# --- one set of real services (PostgreSQL, MLflow, Prefect) for the session -------------------


def pytest_configure(config: pytest.Config) -> None:
    shared_services.choose_directory(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    shared_services.stop_services(config)


@pytest.fixture(scope="session")
def services() -> dict[str, str]:
    """PostgreSQL-backed MLflow and Prefect servers shared by the session (deploy/dev-services):
    MLFLOW_TRACKING_URI, PREFECT_API_URL, the state directory and a PostgreSQL URL. Its tests
    carry the ``services`` marker; they skip when the services cannot start, and fail instead
    under IOCANE_REQUIRE_SERVICES=1 (.ci/run)."""
    return shared_services.services_fixture()


# Where a test file's registry is must not outlive the file: MLflow's fluent API exports its
# global tracking URI as this variable, and a later test file on the same xdist worker (and the
# commands it starts) would register into the wrong project, failing far from the cause.
LEAKY_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL", "PREFECT_HOME")


@pytest.fixture(autouse=True, scope="module")
def _no_environment_leaks(request: pytest.FixtureRequest):
    before = {name: os.environ.get(name) for name in LEAKY_VARIABLES}
    yield
    after = {name: os.environ.get(name) for name in LEAKY_VARIABLES}
    changed = {name: after[name] for name in LEAKY_VARIABLES if after[name] != before[name]}
    assert not changed, f"{request.module.__name__} left the environment changed: {changed}"


@pytest.fixture(autouse=True, scope="module")
def _temporary_prefect_servers_die_with_the_tests() -> None:
    """A temporary Prefect server a test starts in this process (``prefect_test_harness``, a
    flow run in process) dies with it, even when xdist ends a worker with ``os._exit``
    (``iocane.base.orphans``). Only where Prefect is already imported: unit runs stay fast."""
    if "prefect" in sys.modules:
        from iocane.base.orphans import temporary_prefect_servers_die_with_us

        temporary_prefect_servers_die_with_us()


@pytest.fixture
def params_document() -> dict:
    """A fresh copy of the project's params.yaml as a dict."""
    return copy.deepcopy(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()))


@pytest.fixture(scope="session")
def empty_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite registry with its tables and nothing else, made once per worker: a test
    takes a copy (``tests.helpers.registry_files.copy_registry``) instead of paying MLflow's
    schema migrations for a database of its own."""
    from tests.helpers.registry_files import make_empty_registry

    return make_empty_registry(tmp_path_factory.mktemp("empty-registry") / "mlflow.db")


@pytest.fixture(scope="session")
def prefect_home_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Prefect home with its database migrated and its block types registered, made once per
    session (xdist workers share it): a test that runs ``iocane run`` on Prefect's temporary
    server seeds its project's new home from it (``tests.helpers.prefect_homes.seeded_home``)."""
    from tests.helpers.prefect_homes import make_template

    root = tmp_path_factory.getbasetemp()
    # Under xdist each worker's base is a folder of the session's: share their parent.
    return make_template(root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root)


@pytest.fixture(scope="session")
def trained_digits_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small_cnn trained naturally on digits for a few epochs, with 200 held-out images."""
    from sklearn.datasets import load_digits

    from models import ModelSpec, build_model

    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    torch.manual_seed(0)
    spec = ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=16)
    model = build_model(spec)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train_x, train_y = images[200:], labels[200:]
    for _ in range(8):
        order = torch.randperm(len(train_y))
        for start in range(0, len(order), 64):
            index = order[start : start + 64]
            loss = nn.functional.cross_entropy(model(train_x[index]), train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval(), images[:200], labels[:200]


# --- tests/faults/: counts of faults injected and bad inputs tried ---------------------------
# A faults test records what it did as user properties ("faults_injected", N) or
# ("bad_inputs", N); they travel with the report from an xdist worker. The summary counts
# those of passing tests as survived (faults) or rejected cleanly (bad inputs).


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    totals = {"faults_injected": [0, 0], "bad_inputs": [0, 0]}
    for outcome in ("passed", "failed", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") != "call":
                continue
            for key, count in getattr(report, "user_properties", []):
                if key in totals:
                    totals[key][0] += count
                    totals[key][1] += count if outcome == "passed" else 0
    if started := shared_services.start_summary(terminalreporter.config):
        terminalreporter.write_sep("-", "services")
        terminalreporter.write_line(started)
    injected, survived = totals["faults_injected"]
    tried, rejected = totals["bad_inputs"]
    if injected or tried:
        terminalreporter.write_sep("-", "faults suite")
        terminalreporter.write_line(
            f"faults injected: {injected}, survived: {survived}; "
            f"bad inputs tried: {tried}, rejected cleanly: {rejected}"
        )
