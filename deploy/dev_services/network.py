"""Where the servers listen, the address clients use for them, and whether Prefect serves its UI.

The servers listen on 127.0.0.1 unless IOCANE_SERVICES_HOST names another address: neither
server asks for a login by default (Prefect's never, MLflow's without `start --auth`), and
whoever reaches the MLflow server can move `champion` or delete versions. Listening beyond the
machine is a choice the team makes, with --auth and a firewall or a TLS proxy in front.
PostgreSQL stays on 127.0.0.1 whatever the host: only the two servers on this machine use it.
"""

from __future__ import annotations

import os
import socket

from dev_services import HOST, ServicesError

HOST_VARIABLE = "IOCANE_SERVICES_HOST"  # the address the MLflow and Prefect servers listen on
URL_HOST_VARIABLE = "IOCANE_SERVICES_URL_HOST"  # the name clients reach them by
UI_VARIABLE = "IOCANE_SERVICES_PREFECT_UI"  # serve the Prefect UI: 1/true/yes/on
WILDCARDS = ("0.0.0.0", "::")  # every interface
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def configured_host() -> str:
    """The listening address for `start`: IOCANE_SERVICES_HOST, else 127.0.0.1."""
    return os.environ.get(HOST_VARIABLE, "").strip() or HOST


def url_host(listen: str) -> str:
    """The host part of the URLs `env` prints: IOCANE_SERVICES_URL_HOST, else the listening
    address, or this machine's name when the servers listen on every interface."""
    name = os.environ.get(URL_HOST_VARIABLE, "").strip()
    if not name:
        name = socket.getfqdn() if listen in WILDCARDS else listen
    return f"[{name}]" if ":" in name else name  # an IPv6 literal in a URL


def local_host(listen: str) -> str:
    """The address this machine checks the servers' health on: loopback for every interface."""
    if listen in WILDCARDS:
        return "[::1]" if listen == "::" else HOST
    return f"[{listen}]" if ":" in listen else listen


def prefect_ui_enabled() -> bool:
    """IOCANE_SERVICES_PREFECT_UI: off by default (the tests and CI need only the API)."""
    value = os.environ.get(UI_VARIABLE, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ServicesError(f"{UI_VARIABLE}={value!r}: say 1 or 0 (true/false, yes/no, on/off)")


def mlflow_allowed_hosts(listen: str, port: int) -> list[str]:
    """`mlflow server --allowed-hosts` for a server listening beyond loopback: the name clients
    use and loopback (MLflow's default, loopback and private addresses, refuses a host name)."""
    if listen in LOOPBACK:
        return []
    name = url_host(listen)
    loopback = ["localhost", "localhost:*", HOST, f"{HOST}:*"]
    return ["--allowed-hosts", ",".join([name, f"{name}:{port}", *loopback])]


def prefect_ui_environment(api_url: str) -> dict[str, str]:
    """The Prefect server's UI settings: off, or on with the API URL the browser calls (the UI's
    default is built from the listening address, which a browser cannot reach for 0.0.0.0)."""
    if not prefect_ui_enabled():
        return {"PREFECT_UI_ENABLED": "false"}
    return {"PREFECT_UI_ENABLED": "true", "PREFECT_UI_API_URL": api_url}
