"""Where the sweep's points run: the Prefect task runner that ``sweep.runner`` names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from iocane.base.config import ConfigError, SweepConfig

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner


def task_runner(sweep: SweepConfig) -> TaskRunner:
    """Local: one point at a time in this process. Dask: the cluster at ``address``, or a local
    cluster of ``workers`` processes. Ray: the cluster at ``address``, or a local one."""
    if sweep.runner == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    if sweep.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if sweep.address:
            return DaskTaskRunner(address=sweep.address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": sweep.workers, "threads_per_worker": 1, "processes": True}
        )
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise ConfigError("sweep.runner: ray needs prefect-ray (pip install prefect-ray)") from None
    return RayTaskRunner(address=sweep.address) if sweep.address else RayTaskRunner()
