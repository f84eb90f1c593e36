"""Prefect flows: straight-line wiring of the tasks in ``tasks/``."""

from iocane.base.orphans import temporary_prefect_servers_die_with_us

# Whatever runs a flow (``iocane run``, a test, a script) imports this package first: the
# temporary Prefect server it may start dies with it, even when it is SIGKILLed.
temporary_prefect_servers_die_with_us()
