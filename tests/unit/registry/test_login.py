"""The early login check (iocane/registry/login.py) against a stand-in tracking server that
answers the probe with a given status and records the request's Authorization header."""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from iocane.base.errors import BAD_INPUT, TrackingLoginError, exit_code_for
from iocane.registry.login import PROBE, check_tracking_login
from tests.helpers.servers import free_port

PASSWORD = "s3cret-Pa55"


class _Server(http.server.ThreadingHTTPServer):
    status = 200
    authorizations: list[str | None]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # http.server calls it by this name
        server: _Server = self.server  # type: ignore[assignment]
        assert self.path.startswith(PROBE), self.path
        server.authorizations.append(self.headers.get("Authorization"))
        body = b'{"experiments": []}' if server.status == 200 else b"no"
        self.send_response(server.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    stand_in = _Server(("127.0.0.1", 0), _Handler)
    stand_in.authorizations = []
    thread = threading.Thread(target=stand_in.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{stand_in.server_port}")
    yield stand_in
    stand_in.shutdown()
    stand_in.server_close()


def test_an_accepted_login_passes_with_mlflows_own_variables(
    server: _Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    check_tracking_login(tmp_path)
    expected = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert server.authorizations == [expected]


def test_a_missing_login_says_which_variables_to_set(server: _Server, tmp_path: Path) -> None:
    server.status = 401
    with pytest.raises(TrackingLoginError, match="needs a login: set MLFLOW_TRACKING_USERNAME"):
        check_tracking_login(tmp_path)
    assert server.authorizations == [None]


def test_a_wrong_login_exits_2_without_the_password_in_the_message(
    server: _Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server.status = 401
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    with pytest.raises(TrackingLoginError, match="refused the login: wrong user or password") as e:
        check_tracking_login(tmp_path)
    assert PASSWORD not in str(e.value) and "\n" not in str(e.value)
    assert exit_code_for(e.value) == BAD_INPUT


def test_a_login_without_permission_is_refused(
    server: _Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server.status = 403
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    with pytest.raises(TrackingLoginError, match="refuses it access"):
        check_tracking_login(tmp_path)


def test_a_local_registry_and_an_unreachable_server_are_not_judged(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    check_tracking_login(tmp_path)  # the project's mlflow.db: nothing to ask
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    check_tracking_login(tmp_path)  # nobody listening: left to the run's own retries
