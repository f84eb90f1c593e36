"""Gate integrity: no public entry point sets ``champion`` on a version without a passing,
unflagged gate record of its own (tags and run metrics agreeing)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from iocane.base.errors import GATE_FAILED
from iocane.registry.aliases import PromotionRefused, assign_alias, promote, rollback
from iocane.registry.promotion import CHAMPION
from tests.helpers.paths import PROJECT_ROOT
from tests.helpers.registry_files import copy_registry
from tests.unit.registry.test_promotion import NAME, aliases, create_version, register


@pytest.fixture(scope="module")
def template(empty_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding NAME with no versions, made once from the session's empty one (the
    schema migrations take seconds) and copied for each test."""
    uri = copy_registry(empty_registry, tmp_path_factory.mktemp("registry"))
    MlflowClient(tracking_uri=uri).create_registered_model(NAME)
    return Path(uri.removeprefix("sqlite:///"))


@pytest.fixture
def registry(template: Path, tmp_path: Path) -> tuple[MlflowClient, str]:
    shutil.copy(template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri), uri


def _tamper_run(client: MlflowClient, version: str, **metrics: float) -> None:
    run_id = client.get_model_version(NAME, version).run_id
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)


UNPROVEN = {
    "failed gate": {"gate": "failed"},
    "trust flags": {"trust_flags": "2"},
    "no evidence_key (registered outside iocane)": {"evidence_key": ""},
}


@pytest.mark.parametrize("tags", UNPROVEN.values(), ids=UNPROVEN.keys())
def test_promote_refuses_an_unproven_version(registry, tags: dict[str, str]) -> None:
    client, uri = registry
    champion = register(client, 0.80)
    candidate = create_version(client, NAME, 0.90, **tags)
    if tags.get("evidence_key") == "":
        client.delete_model_version_tag(NAME, candidate, "evidence_key")
    with pytest.raises(PromotionRefused):
        promote(client, uri, NAME, candidate, "try")
    assert aliases(client)[CHAMPION] == champion


def test_tags_that_disagree_with_the_run_are_not_a_gate_record(registry) -> None:
    """Tags edited in the UI to say "passed" do not outweigh the run's logged gate."""
    client, uri = registry
    champion = register(client, 0.80)
    candidate = create_version(client, NAME, 0.90)
    _tamper_run(client, candidate, gate_passed=0.0)
    with pytest.raises(PromotionRefused, match="tags disagree with its run"):
        promote(client, uri, NAME, candidate, "try")
    # Registration too: a new version that would beat the champion on its tags.
    with pytest.raises(PromotionRefused, match="tags disagree"):
        assign_alias(client, uri, NAME, candidate, max_clean_regression=0.01)
    assert aliases(client)[CHAMPION] == champion


def test_rollback_refuses_a_predecessor_that_lost_its_gate_record(registry) -> None:
    client, uri = registry
    first = register(client, 0.80)
    second = register(client, 0.85)
    assert aliases(client)[CHAMPION] == second
    client.set_model_version_tag(NAME, first, "trust_flags", "1")  # a re-evaluation flagged it
    with pytest.raises(PromotionRefused, match="trust flag"):
        rollback(client, uri, NAME, "second broke something")
    assert aliases(client)[CHAMPION] == second


def test_the_cli_refuses_and_exits_3(registry, tmp_path: Path) -> None:
    client, uri = registry
    champion = register(client, 0.80)
    failed = create_version(client, NAME, 0.95, gate="failed")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "iocane.cli",
            "promote",
            "--name",
            NAME,
            "--version",
            failed,
            "--reason",
            "x",
        ],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == GATE_FAILED, result.stderr
    assert "did not pass the gate" in result.stderr
    assert aliases(client)[CHAMPION] == champion


def test_only_one_function_moves_champion() -> None:
    """Every call that sets a registry alias names ``CHALLENGER``, except in ``_set_champion``,
    which checks the gate record first: a new code path cannot skip the check unnoticed."""
    calls = []
    for directory in ("iocane", "tasks", "flows"):
        for path in sorted((PROJECT_ROOT / directory).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for function in ast.walk(tree):
                if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for node in ast.walk(function):
                    if (
                        isinstance(node, ast.Call)
                        and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "set_registered_model_alias"
                    ):
                        alias = ast.unparse(node.args[1]) if len(node.args) > 1 else "?"
                        where = path.relative_to(PROJECT_ROOT).as_posix()
                        calls.append((where, function.name, alias))
    champion_calls = [call for call in calls if call[2] != "CHALLENGER"]
    assert champion_calls == [("iocane/registry/aliases.py", "_set_champion", "CHAMPION")], calls
