"""The sweep's MLflow runs (iocane.registry.sweep_runs): a parent run per sweep, a nested run per
point, each ending FINISHED or FAILED with the error named."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from iocane.registry.sweep_runs import point_run, sweep_run


class FakeClient:
    """What the sweep's runs ask of an MlflowClient, recorded."""

    def __init__(self) -> None:
        self.created: list[dict] = []
        self.tags: dict[tuple[str, str], str] = {}
        self.status: dict[str, str] = {}

    def create_run(self, experiment_id: str, *, run_name: str, tags: dict) -> SimpleNamespace:
        run_id = f"run-{len(self.created)}"
        self.created.append({"experiment": experiment_id, "name": run_name, "tags": tags})
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id, experiment_id=experiment_id))

    def get_run(self, run_id: str) -> SimpleNamespace:
        experiment = self.created[int(run_id.removeprefix("run-"))]["experiment"]
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id, experiment_id=experiment))

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.tags[(run_id, key)] = value

    def set_terminated(self, run_id: str, status: str) -> None:
        self.status[run_id] = status


def test_a_point_runs_nested_in_the_sweep_and_a_failure_is_recorded() -> None:
    client = FakeClient()
    with (
        pytest.raises(RuntimeError, match="no more data"),
        sweep_run(client, experiment_id="7", sweep_id="sweep-1", points=2) as parent,
    ):
        with point_run(client, parent_run_id=parent, point="eps0.1") as first:
            pass
        with point_run(client, parent_run_id=parent, point="eps0.2") as second:
            raise RuntimeError("no more data")
    sweep, *points = client.created
    assert sweep == {
        "experiment": "7",
        "name": "sweep-1",
        "tags": {"iocane.sweep": "sweep-1", "iocane.sweep_points": "2"},
    }
    assert points == [
        {
            "experiment": "7",
            "name": name,
            "tags": {"mlflow.parentRunId": parent, "iocane.sweep_point": name},
        }
        for name in ("eps0.1", "eps0.2")
    ]
    assert client.status == {first: "FINISHED", second: "FAILED", parent: "FAILED"}
    assert client.tags == {
        (second, "iocane.outcome"): "failed: RuntimeError: no more data",
        (parent, "iocane.outcome"): "RuntimeError: no more data",
    }


def test_a_sweep_that_ends_well_is_finished() -> None:
    client = FakeClient()
    with sweep_run(client, experiment_id="7", sweep_id="sweep-1", points=0) as parent:
        pass
    assert client.status == {parent: "FINISHED"} and client.tags == {}
