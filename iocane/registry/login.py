"""Before any work: does the MLflow tracking server accept this login?

A server behind MLflow's basic-auth app (``mlflow server --app-name basic-auth``) refuses a
request without the right user and password with 401. Found at registration, that would waste
the whole training; ``check_tracking_login`` asks once, first, and a refused login exits 2.

iocane never reads, passes or stores the credentials: MLflow's client takes them from its own
environment variables (``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``, or
``MLFLOW_TRACKING_TOKEN``), here as for every later request of the run. The messages name the
variables, never their values.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from iocane.base.errors import TrackingLoginError
from iocane.base.settings import tracking_uri

log = logging.getLogger("iocane")

# The lightest authenticated request: every user who can run iocane may list experiments.
PROBE = "/api/2.0/mlflow/experiments/search"


def check_tracking_login(root: Path) -> None:
    """Raise ``TrackingLoginError`` (exit 2) when the tracking server refuses the login.

    Only a server (an http or https tracking URI) is asked, once, without retries. A server
    that cannot be reached is not judged here: the run's own retries and messages deal with it."""
    uri = tracking_uri(root)
    if not uri.startswith(("http://", "https://")):
        return
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        response = http_request(
            get_default_host_creds(uri),
            PROBE,
            "GET",
            params={"max_results": 1},
            max_retries=0,
            timeout=30,
            raise_on_status=False,
        )
    except MlflowException as error:  # no answer: left to the run
        log.debug("tracking server not checked: %s", error)
        return
    if response.status_code == 401:
        if os.environ.get("MLFLOW_TRACKING_USERNAME") or os.environ.get("MLFLOW_TRACKING_TOKEN"):
            raise TrackingLoginError(
                f"the MLflow tracking server {uri} refused the login: wrong user or password in "
                "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
            )
        raise TrackingLoginError(
            f"the MLflow tracking server {uri} needs a login: set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD"
        )
    if response.status_code == 403:
        raise TrackingLoginError(
            f"the MLflow tracking server {uri} accepted the login of MLFLOW_TRACKING_USERNAME "
            "but refuses it access: ask its admin for a permission"
        )
