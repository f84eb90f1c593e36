"""The typer command line: usage errors as one line and exit 2, help with examples, the review
table and its JSON, the schema command, and the generated CLI reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

import iocane.base.config_schema
from iocane.base.errors import BAD_INPUT
from iocane.cli import app, cli_reference_markdown, main
from iocane.registry.review import champion_vs_challenger, version_rows
from tests.helpers.cli_runs import run_cli_with_project_params
from tests.unit.registry.test_promotion import NAME, create_version, register

COMMANDS = ("run", "sweep", "evaluate", "review", "promote", "serve", "schema")


def _error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["run", "--bogus"], "--bogus"),
        (["nosuch"], "nosuch"),
        (["evaluate"], "--model-uri"),
        (["promote", "--name", "m"], "--rollback"),
        (["promote", "--name", "m", "--version", "2", "--rollback"], "--rollback"),
        (["serve"], "--cron"),
    ],
    ids=["unknown option", "unknown command", "missing option", "neither", "both", "no cron"],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == BAD_INPUT
    (line,) = _error_lines(capsys)
    assert line.startswith("error: ") and named in line, line


def test_no_command_prints_the_overview_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == BAD_INPUT
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples" in out and f"iocane {command}" in out


def test_bad_params_fail_fast_without_importing_the_heavy_modules(tmp_path: Path) -> None:
    """The params are checked before torch, Prefect or MLflow are imported."""
    result = run_cli_with_project_params(tmp_path, "run", "--set", "train.eps=abc")
    assert result.returncode == BAD_INPUT, result.stderr
    assert result.stderr.splitlines() == [
        "error: train.eps: expected a number, got str 'abc'",
        "[]",
    ], result.stderr


def test_app_is_the_typer_application() -> None:
    import typer

    assert isinstance(app, typer.Typer)


# --- review ---------------------------------------------------------------------------------


@pytest.fixture
def reviewed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """A registry with a champion (v2), a challenger (v3) and a failed version (v1)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model(NAME)
    create_version(client, NAME, 0.9, gate="failed")
    for robust in (0.80, 0.75):
        version = register(client, robust)
        client.log_metric(client.get_model_version(NAME, version).run_id, "robust_accuracy", robust)
    client.log_metric(client.get_model_version(NAME, "2").run_id, "cost/hours", 0.5)
    # The challenger was evaluated with a threat profile (evaluate.threats), the champion too.
    client.set_model_version_tag(NAME, "3", "threat_profile", "l0 (2 pixels) 0.6100")
    for version, l0 in (("2", 0.55), ("3", 0.61)):
        client.log_metric(client.get_model_version(NAME, version).run_id, "threat_accuracy/l0", l0)
    # Both certified (evaluate.certify): the band as a tag, the figures as metrics.
    for version, proven, crown in (("2", 0.4, 0.4), ("3", 0.45, 0.44)):
        client.set_model_version_tag(NAME, version, "certified_band", f"{proven:.4f}-0.8000")
        run_id = client.get_model_version(NAME, version).run_id
        client.log_metric(run_id, "certified_accuracy", proven)
        client.log_metric(run_id, "certified_accuracy/crown", crown)
    return client


def test_review_prints_the_versions_and_the_comparison(
    reviewed: MlflowClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["review", "--name", NAME]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"{NAME}: 3 version(s)"
    header = next(line for line in lines if line.split()[:3] == ["version", "aliases", "gate"])
    assert "gain_per_hour" in header and "price" not in header  # no price was ever set
    rows = {line.split()[0]: line.split() for line in lines if line.split()[:1] in (["2"], ["3"])}
    assert rows["2"][1:3] == ["champion", "passed"] and "0.500" in rows["2"]
    assert rows["3"][1:3] == ["challenger", "passed"]
    assert "champion v2 against challenger v3" in out
    delta = next(line for line in lines if line.split()[:1] == ["robust_accuracy"])
    assert delta.split()[1:] == ["0.8000", "0.7500", "-0.0500"]
    assert "threats" in header and "l0 (2 pixels) 0.6100" in out
    profile = next(line for line in lines if line.split()[:1] == ["threat_accuracy/l0"])
    assert profile.split()[1:] == ["0.5500", "0.6100", "+0.0600"]
    assert "certified" in header and "0.4500-0.8000" in rows["3"]
    proven = next(line for line in lines if line.split()[:1] == ["certified_accuracy"])
    assert proven.split()[1:] == ["0.4000", "0.4500", "+0.0500"]
    crown = next(line for line in lines if line.split()[:1] == ["certified_accuracy/crown"])
    assert crown.split()[1:] == ["0.4000", "0.4400", "+0.0400"]


def test_review_leaves_out_the_threats_column_when_no_version_has_a_profile(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from iocane.cli.review_table import print_review

    row = {
        "version": 1,
        "aliases": "",
        "gate": "passed",
        "threats": None,
        "certified": None,
        "price": None,
    }
    print_review(NAME, [row], {"summary": "", "metrics": []})
    header = capsys.readouterr().out.splitlines()[2]
    assert header.split() == ["version", "aliases", "gate"]


def test_review_json_is_the_rows_and_the_comparison(
    reviewed: MlflowClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["review", "--name", NAME, "--json"]) == 0
    expected = {
        "model": NAME,
        "versions": version_rows(reviewed, NAME),
        "comparison": champion_vs_challenger(reviewed, NAME),
    }
    assert capsys.readouterr().out == json.dumps(expected, indent=2) + "\n"


def test_review_of_an_empty_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    assert main(["review", "--name", "nothing-here"]) == 0
    assert capsys.readouterr().out == "no versions of nothing-here in the registry\n"


# --- schema and the reference ---------------------------------------------------------------


def test_schema_prints_the_params_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == iocane.base.config_schema.params_json_schema()
    assert "train" in printed.get("properties", {})


def test_schema_prints_what_params_json_schema_returns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command alone, against a stand-in for the config's schema function."""
    schema = {"type": "object", "properties": {"train": {"type": "object"}}}
    monkeypatch.setattr(iocane.base.config_schema, "params_json_schema", lambda: schema)
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema


def test_the_reference_covers_every_command_and_option() -> None:
    import typer

    reference = cli_reference_markdown()
    group = typer.main.get_command(app)
    context = group.make_context("iocane", [], resilient_parsing=True)
    assert set(group.list_commands(context)) == set(COMMANDS)
    for name in COMMANDS:
        section = reference.split(f"## `iocane {name}`", 1)[1].split("\n## ", 1)[0]
        command = group.get_command(context, name)
        assert command.help.split("\n\n")[0] in section
        for param in command.params:
            for option in param.opts:
                assert f"`{option}`" in section, (name, option)
        assert "```bash\niocane " + name in section
