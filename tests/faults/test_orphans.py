"""Nothing left behind: every process ``iocane run`` starts (Prefect's temporary server, torchrun
and its two DDP ranks) ends with it, whether it is SIGKILLed, SIGTERMed or ends normally; and a
DVC stage ends with a SIGKILLed ``dvc``.

Each run is started in its own session, so that no signal to a process group does the work the
kernel's parent-death signal must do. The test records the run's process tree while it runs
(the processes of a SIGKILLed parent are handed to init, so it cannot be listed afterwards) and
then checks that none of them is left. The tests share one project, one after the other: each
run resumes what the one before it left (data prepared, natural model trained, checkpoints).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from iocane.base.layout import Layout
from tests.helpers.pipeline_params import write_tiny_params
from tests.helpers.prefect_homes import seeded_home
from tests.helpers.registry_files import copy_registry

pytestmark = [pytest.mark.fault]

# Two ranks, and epochs enough to be killed in the middle of them.
PARAMS = {"warmup": {"epochs": 1}, "train": {"nproc": 2, "epochs": 3, "eps_ramp_epochs": 1}}
# How long the kernel may take to end the orphans (it is immediate; the machine may be loaded).
GRACE_SECONDS = 15
STARTUP_SECONDS = 600


def _env(project: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "PREFECT_HOME": str(project / ".prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(project / ".prefect" / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)  # the temporary server is what is tested
    return env


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, prefect_home_template: Path, empty_registry: Path
) -> Path:
    project = tmp_path_factory.mktemp("orphans") / "project"
    project.mkdir()
    write_tiny_params(project / "params.yaml", **PARAMS)
    seeded_home(prefect_home_template, project / ".prefect")
    copy_registry(empty_registry, project)
    return project


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return ""


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Tree:
    """A process and every descendant it has had while it was watched."""

    def __init__(self, process: subprocess.Popen, stderr: Path) -> None:
        self.process = process
        self.stderr = stderr
        self.root = psutil.Process(process.pid)
        self.seen: dict[int, psutil.Process] = {}
        self.commands: dict[int, str] = {}  # the last command line seen (a wrapper execs)

    def now(self) -> list[psutil.Process]:
        """Its descendants now (and records them)."""
        try:
            children = self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in children:
            self.seen.setdefault(child.pid, child)
            self.commands[child.pid] = _cmdline(child) or self.commands.get(child.pid, "")
        return children

    def wait_for(self, condition: Callable[[list[psutil.Process]], bool]) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not condition(self.now()):
            if self.process.poll() is not None:
                pytest.fail(f"exited early with {self.process.returncode}: {self.errors()}")
            assert time.monotonic() < deadline, "timed out waiting"
            time.sleep(0.1)

    def watch_to_the_end(self) -> int:
        while self.process.poll() is None:
            self.now()
            time.sleep(0.1)
        return self.process.returncode

    def errors(self) -> str:
        return self.stderr.read_text()[-3000:]

    def left_behind(self) -> list[str]:
        """What is still running of what was seen, after a grace period; kills it, so that a
        failing test leaves nothing behind either."""
        deadline = time.monotonic() + GRACE_SECONDS
        while (alive := [p for p in self.seen.values() if _alive(p)]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        left = [f"{p.pid}: {self.commands[p.pid][:200]}" for p in alive]
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        return left

    def saw(self, what: str) -> bool:
        return any(what in command for command in self.commands.values())


def _start(project: Path, command: list[str], **env: str) -> Tree:
    """``command`` in ``project``, in its own session; its stderr in a file (a pipe nobody
    reads while it runs would fill up and stall it)."""
    stderr = project.parent / "stderr.txt"
    with stderr.open("w") as sink:
        process = subprocess.Popen(
            command,
            cwd=project,
            env={**_env(project), **env},
            stdout=subprocess.DEVNULL,
            stderr=sink,
            start_new_session=True,
        )
    return Tree(process, stderr)


def _iocane_run(project: Path) -> Tree:
    return _start(project, [sys.executable, "-m", "iocane.cli", "run"])


SERVER = "prefect.server.api.server:create_app"
TORCHRUN = "torch.distributed.run"


def _server_running(processes: list[psutil.Process]) -> bool:
    return any(SERVER in _cmdline(process) for process in processes)


def _ranks_running(project: Path) -> Callable[[list[psutil.Process]], bool]:
    """Both ranks of this run have started (a killed run's pid files stay until the next
    launch: only the pids among the watched process's descendants count)."""
    pid_files = [Layout(project).root / ".iocane" / "ddp" / f"rank-{rank}.pid" for rank in (0, 1)]

    def running(processes: list[psutil.Process]) -> bool:
        pids = {process.pid for process in processes}
        try:
            return all(int(path.read_text()) in pids for path in pid_files)
        except (FileNotFoundError, ValueError):
            return False

    return running


def _server_and_ranks_running(project: Path) -> Callable[[list[psutil.Process]], bool]:
    ranks = _ranks_running(project)
    return lambda processes: _server_running(processes) and ranks(processes)


def _assert_nothing_left(tree: Tree, *expected: str) -> None:
    left = tree.left_behind()
    for what in expected:
        assert tree.saw(what), f"never saw {what} running: the test missed its moment"
    assert not left, f"left behind: {left}"


def test_sigkill_while_the_temporary_server_starts(
    project: Path, record_property: Callable[[str, object], None]
) -> None:
    run = _iocane_run(project)
    run.wait_for(_server_running)
    run.process.kill()
    run.process.wait()
    record_property("faults_injected", 1)
    _assert_nothing_left(run, SERVER)


def test_sigkill_while_two_ranks_train(
    project: Path, record_property: Callable[[str, object], None]
) -> None:
    run = _iocane_run(project)
    run.wait_for(
        lambda processes: _server_running(processes) and _ranks_running(project)(processes)
    )
    run.process.kill()
    run.process.wait()
    record_property("faults_injected", 1)
    _assert_nothing_left(run, SERVER, TORCHRUN, "-m iocane.training.launcher --params")


def test_sigterm_while_two_ranks_train(
    project: Path, record_property: Callable[[str, object], None]
) -> None:
    run = _iocane_run(project)
    run.wait_for(
        lambda processes: _server_running(processes) and _ranks_running(project)(processes)
    )
    run.process.send_signal(signal.SIGTERM)
    code = run.watch_to_the_end()
    record_property("faults_injected", 1)
    assert code == 128 + signal.SIGTERM, run.errors()
    _assert_nothing_left(run, SERVER, TORCHRUN)


def test_sigkill_of_dvc_ends_its_stage_and_the_ranks(
    project: Path, record_property: Callable[[str, object], None]
) -> None:
    # A stand-in for `dvc repro`: what matters is what DVC does to a stage, which is to run it
    # as its child with DVC_STAGE set (dvc/stage/run.py).
    stand_in = (
        "import subprocess, sys; "
        "subprocess.run([sys.executable, '-m', 'iocane.stages', 'train'], check=False)"
    )
    dvc = _start(project, [sys.executable, "-c", stand_in], DVC_STAGE="train")
    dvc.wait_for(_ranks_running(project))
    dvc.process.kill()
    dvc.process.wait()
    record_property("faults_injected", 1)
    _assert_nothing_left(dvc, "-m iocane.stages train", TORCHRUN)


def test_a_normal_end_leaves_nothing_behind(project: Path) -> None:
    run = _iocane_run(project)
    code = run.watch_to_the_end()
    assert code in (0, 3), run.errors()  # the gate's verdict is not what is tested
    _assert_nothing_left(run, SERVER, TORCHRUN)
