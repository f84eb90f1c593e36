"""Retries only where I/O can flake: a dataset download, a call to the registry.

A bad params key, corrupt data or a refused promotion fails the same way every time, so those
are never retried; neither is training (a rerun resumes from the last checkpoint instead). The
backoff is exponential with jitter, so runs that lost the same server do not return together.
"""

from __future__ import annotations

import sqlite3
import urllib.error
from typing import Any

from prefect.tasks import exponential_backoff

RETRIES = 3
# 2 s, 4 s, 8 s, each stretched by up to half again at random.
RETRY_OPTIONS: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
}

# MLflow's REST error codes that mean "try again later".
_TRANSIENT_MLFLOW_CODES = {
    "TEMPORARILY_UNAVAILABLE",
    "RESOURCE_EXHAUSTED",
    "REQUEST_LIMIT_EXCEEDED",
}


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is the network or a busy server, which a later attempt may not meet."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(
        error,
        ConnectionError
        | TimeoutError
        | urllib.error.URLError
        | requests.exceptions.ConnectionError
        | requests.exceptions.Timeout,
    ):
        return True
    if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
        return True
    if isinstance(error, MlflowException):
        # MLflow's REST client wraps a dropped connection as "API request to ... failed with
        # exception ..." once its own retries are spent.
        return error.error_code in _TRANSIENT_MLFLOW_CODES or "API request to" in str(error)
    # A wrapper (DataError "could not download ... from exc") is as transient as its cause.
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return cause is not None and cause is not error and is_transient(cause)


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed attempt only for a transient error."""
    try:
        state.result()
    except Exception as error:
        return is_transient(error)
    return False
