"""Real servers for the tests (MLflow, Prefect) on loopback, stopped with their children."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

STARTUP_SECONDS = 120


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_process_group(process: subprocess.Popen) -> None:
    """Terminate a process started with ``start_new_session`` and all its children."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        process.poll()  # reap the parent, or the group never looks empty
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@contextlib.contextmanager
def running_server(
    command: list[str], env: dict[str, str], cwd: Path, health_url: str
) -> Iterator[Path]:
    """Start ``command``, wait until ``health_url`` answers 200, yield its log file, stop it."""
    log_path = cwd / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"{command[0]} exited with {process.returncode}:\n{log_path.read_text()}"
                )
            try:
                with urllib.request.urlopen(health_url, timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{health_url} not healthy after {STARTUP_SECONDS}s:\n{log_path.read_text()}"
                )
            time.sleep(0.5)
        yield log_path
    finally:
        stop_process_group(process)


def prefect_api(api_url: str, path: str, body: dict | None = None) -> Any:
    """One call of a Prefect server's REST API: GET without ``body``, POST with it; the JSON
    answer (None for an empty one)."""
    request = urllib.request.Request(
        api_url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


def harden_runs_of(api_url: str, project: Path) -> list[dict]:
    """The ``harden`` flow runs a Prefect server holds for the project at ``project``."""
    body = {"flows": {"name": {"any_": ["harden"]}}, "limit": 200}
    runs = prefect_api(api_url, "/flow_runs/filter", body)
    return [run for run in runs if run["parameters"].get("project_root") == str(project)]
