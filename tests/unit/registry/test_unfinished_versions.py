"""A registration the MLflow server walked out of: its half-made version is deleted by the next
registration of the same evidence, a complete version whose alias decision was cut off has it
finished then, and a server that stays away is named in one line, whether at registration or at
the start of the run.

tests/faults/test_restarts.py stops and starts a real server under ``iocane run``; these check
the pieces on a sqlite registry and on the errors MLflow's REST client raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from iocane.base.config import load_config
from iocane.base.errors import EXPLAINED_ERRORS, OTHER_ERROR, RegistryUnreachable, exit_code_for
from iocane.base.layout import Layout
from iocane.pipeline.retries import is_transient
from iocane.registry.aliases import DECISION_TAG, assign_alias, champion_stack, decision_finished
from iocane.registry.attempts import attempt_run
from iocane.registry.promotion import CHAMPION
from iocane.registry.registration import PENDING_TAG, _delete_unfinished, decided_registration
from iocane.registry.tracking import unreachable_message
from tests.helpers.pipeline_params import write_tiny_params
from tests.helpers.registry_files import copy_registry
from tests.helpers.servers import free_port
from tests.unit.registry.test_promotion import create_version

NAME = "iocane-unfinished"
URI = "http://127.0.0.1:18599"
REFUSED = MlflowException(
    f"API request to {URI}/api/2.0/mlflow/model-versions/search failed with exception "
    "HTTPConnectionPool(host='127.0.0.1', port=18599): Max retries exceeded with url: ... "
    "(Caused by NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=18599): Failed to "
    'establish a new connection: [Errno 111] Connection refused"))'
)


def test_deletes_only_the_unfinished_versions_of_this_evidence(
    empty_registry: Path, tmp_path: Path
) -> None:
    client = MlflowClient(tracking_uri=copy_registry(empty_registry, tmp_path))
    client.create_registered_model(NAME)

    def version(**tags: str) -> str:
        return str(client.create_model_version(NAME, source="models/fake", tags=tags).version)

    half_made = version(**{PENDING_TAG: "key-a", "gate": "passed"})
    complete = version(**{PENDING_TAG: "key-a", "evidence_key": "key-a"})
    other_evidence = version(**{PENDING_TAG: "key-b"})
    before_the_pending_tag = version(evidence_key="key-a")

    _delete_unfinished(client, NAME, "key-a")

    left = {str(found.version) for found in client.search_model_versions(f"name='{NAME}'")}
    assert left == {complete, other_evidence, before_the_pending_tag}
    assert half_made not in left


def _unreachable(uri: str, error: BaseException) -> str:
    return unreachable_message(uri, error, when="while registering", then="run again")


def test_an_unreachable_server_is_named_in_one_line() -> None:
    message = _unreachable(URI, REFUSED)
    assert "\n" not in message
    assert message.startswith(f"the MLflow tracking server {URI} did not answer")
    assert "([Errno 111] Connection refused)" in message
    assert message.endswith("; run again")
    server_errors = MlflowException(f"API request to {URI}/x failed: too many 503 error responses")
    assert "(too many 503 error responses)" in _unreachable(URI, server_errors)


def test_unreachable_is_retried_explained_and_not_bad_input() -> None:
    try:
        raise RegistryUnreachable(_unreachable(URI, REFUSED)) from REFUSED
    except RegistryUnreachable as error:
        raised = error
    assert is_transient(raised), "Prefect retries the register stage through its cause"
    assert isinstance(raised, EXPLAINED_ERRORS), "one line, no traceback"
    assert exit_code_for(raised) == OTHER_ERROR


def test_a_run_whose_tracking_server_does_not_answer_stops_at_once_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    config = load_config(write_tiny_params(tmp_path / "params.yaml"))
    with pytest.raises(RegistryUnreachable) as raised, attempt_run(config, Layout(tmp_path)):
        pytest.fail("the block ran without a tracking server")
    assert str(raised.value).startswith(
        f"the MLflow tracking server {uri} did not answer at the start of the run ("
    )
    assert "nothing was trained" in str(raised.value)


# The registry writes of an alias decision. Once the fault is armed, each fails as a request to
# a server that went away does, so the attempt can neither finish nor undo its decision.
WRITES = (
    "set_registered_model_alias",
    "set_registered_model_tag",
    "set_model_version_tag",
    "delete_registered_model_alias",
    "delete_model_version",
)


@contextlib.contextmanager
def server_goes_away_at(monkeypatch: pytest.MonkeyPatch, first_failing: str) -> Iterator[None]:
    """From the first call of ``MlflowClient.<first_failing>`` on, every registry write fails
    (the reads go on answering: a decision reads before it writes)."""
    armed = False
    with monkeypatch.context() as patch:
        for method in WRITES:
            real = getattr(MlflowClient, method)

            def write(self, *args, _real=real, _method=method, **kwargs):
                nonlocal armed
                armed = armed or _method == first_failing
                if armed:
                    raise REFUSED
                return _real(self, *args, **kwargs)

            patch.setattr(MlflowClient, method, write)
        yield


@pytest.mark.parametrize(
    ("earlier_champion", "first_failing"),
    [
        (False, "set_registered_model_alias"),  # before any alias moved
        (False, "set_registered_model_tag"),  # champion moved, champion_stack not written
        (True, "set_registered_model_tag"),  # the same, and moving back to v1 fails too
        (True, "set_model_version_tag"),  # champion and stack moved, the version's record not
    ],
    ids=["before-the-move", "crowned-unrecorded", "crowned-over-v1", "stack-written"],
)
def test_a_rerun_finishes_an_alias_decision_the_server_walked_out_of(
    empty_registry: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    earlier_champion: bool,
    first_failing: str,
) -> None:
    """Issue 20's window: the version's evidence is complete (``evidence_key`` set), the server
    goes away inside its alias decision, and deleting the version fails too. The next
    registration of the same evidence must decide its alias, not reuse it undecided."""
    uri = copy_registry(empty_registry, tmp_path)
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model(NAME)
    if earlier_champion:
        assign_alias(client, uri, NAME, create_version(client, NAME, 0.80, evidence_key="v1"), 0.01)
    version = create_version(client, NAME, 0.85, evidence_key="ours")

    with server_goes_away_at(monkeypatch, first_failing), pytest.raises(MlflowException):
        assign_alias(client, uri, NAME, version, 0.01)
    assert not decision_finished(client, NAME, version), "the window this test is about"

    registration = decided_registration(client, uri, NAME, "ours", max_clean_regression=0.01)

    assert registration is not None and registration.version == version
    assert registration.alias == CHAMPION, registration
    aliases = client.get_registered_model(NAME).aliases
    assert {alias: str(holder) for alias, holder in aliases.items()} == {CHAMPION: version}
    earlier = ["1"] if earlier_champion else []
    assert champion_stack(client, NAME) == [*earlier, version], "every move, each once"
    tags = client.get_model_version(NAME, version).tags
    assert tags["champion_action"] == "registered" and tags[DECISION_TAG]
    # Decided now: a registration after this one reuses it as it is.
    assert decision_finished(client, NAME, version)
    assert decided_registration(client, uri, NAME, "ours", 0.01) == registration
