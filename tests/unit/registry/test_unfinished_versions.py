"""A registration the MLflow server walked out of: its half-made version is deleted by the next
registration of the same evidence, and a server that stays away is named in one line, whether
at registration or at the start of the run.

tests/faults/test_restarts.py stops and starts a real server under ``iocane run``; these check
the pieces on a sqlite registry and on the errors MLflow's REST client raises.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from iocane.config import load_config
from iocane.errors import EXPLAINED_ERRORS, OTHER_ERROR, RegistryUnreachable, exit_code_for
from iocane.layout import Layout
from iocane.pipeline.retries import is_transient
from iocane.registry.attempts import attempt_run
from iocane.registry.registration import PENDING_TAG, _delete_unfinished
from iocane.registry.tracking import unreachable_message
from tests.helpers.pipeline_params import write_tiny_params
from tests.helpers.servers import free_port

NAME = "iocane-unfinished"
URI = "http://127.0.0.1:18599"
REFUSED = MlflowException(
    f"API request to {URI}/api/2.0/mlflow/model-versions/search failed with exception "
    "HTTPConnectionPool(host='127.0.0.1', port=18599): Max retries exceeded with url: ... "
    "(Caused by NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=18599): Failed to "
    'establish a new connection: [Errno 111] Connection refused"))'
)


def test_deletes_only_the_unfinished_versions_of_this_evidence(tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
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
