"""PostgreSQL for the services: Debian's package, a cluster in the state directory, the
databases. PostgreSQL refuses to run as root: under root the cluster runs as `postgres`.
"""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
from pathlib import Path

from dev_services import HOST, ServicesError, State, say
from dev_services.processes import tail

PG_SUPERUSER = "iocane"
DATABASES = ("mlflow", "prefect", "mlflow_auth")  # mlflow_auth: the basic-auth app's users


def postgres_bin() -> Path:
    """The directory of initdb/pg_ctl/psql: Debian's newest /usr/lib/postgresql/N/bin."""
    if override := os.environ.get("IOCANE_SERVICES_PG_BIN"):
        return Path(override)
    if not (found := _installed()):
        if os.geteuid() != 0:
            raise ServicesError("PostgreSQL is not installed: run `apt-get install postgresql`")
        install_postgres()
        if not (found := _installed()):
            raise ServicesError("apt-get installed postgresql, but no /usr/lib/postgresql/N/bin")
    return found[-1]


def _installed() -> list[Path]:
    """Debian's PostgreSQL bin directories, oldest version first."""
    found = Path("/usr/lib/postgresql").glob("*/bin/initdb")
    return [path.parent for path in sorted(found, key=lambda p: int(p.parent.parent.name))]


def install_postgres() -> None:
    """apt-get install postgresql, without the cluster (and server) the package would start."""
    say("installing PostgreSQL (apt-get install postgresql)")
    config = Path("/etc/postgresql-common/createcluster.conf")
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text("create_main_cluster = false\n")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    keep = ["-o", "Dpkg::Options::=--force-confold", "-o", "Dpkg::Options::=--force-confdef"]
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *keep, "postgresql"],
    ):
        completed = subprocess.run(command, env=env, capture_output=True, text=True)
        if completed.returncode != 0:
            raise ServicesError(f"{' '.join(command)} failed:\n{completed.stderr[-2000:]}")


def postgres_account() -> pwd.struct_passwd | None:
    """Who runs the cluster: None for the caller itself; under root, the `postgres` user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "iocane-postgres"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "iocane-postgres",
        ],
        check=True,
    )
    return pwd.getpwnam("iocane-postgres")


def as_postgres(command: list[str], account: pwd.struct_passwd | None, **kwargs):
    """Run ``command`` as the cluster's user (no supplementary groups, its own HOME)."""
    if account is None:
        return subprocess.run(command, **kwargs)
    env = {**kwargs.pop("env", os.environ), "HOME": account.pw_dir, "USER": account.pw_name}
    return subprocess.run(
        command,
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
        env=env,
        cwd=kwargs.pop("cwd", "/"),
        **kwargs,
    )


def init_cluster(state: State, bindir: Path, account: pwd.struct_passwd | None) -> None:
    """initdb once: password logins only (scram), the password in postgres.password."""
    if (state.data / "PG_VERSION").exists():
        return
    state.postgres.mkdir(mode=0o700, parents=True, exist_ok=True)
    if account is not None:
        os.chown(state.postgres, account.pw_uid, account.pw_gid)
        reach = as_postgres(["test", "-w", str(state.postgres)], account)
        if reach.returncode != 0:
            raise ServicesError(
                f"the {account.pw_name} user cannot reach {state.postgres}: choose a state "
                "directory it can reach, e.g. IOCANE_SERVICES_DIR=/var/tmp/iocane-services"
            )
    if not state.password.exists():
        state.password.write_text(secrets.token_urlsafe(24))
        state.password.chmod(0o600)
    pwfile = state.postgres / "initdb.password"  # the cluster user's copy, for initdb only
    pwfile.write_text(state.password.read_text())
    if account is not None:
        os.chown(pwfile, account.pw_uid, account.pw_gid)
    try:
        as_postgres(
            [
                str(bindir / "initdb"),
                "-D",
                str(state.data),
                "-U",
                PG_SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
            ],
            account,
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as failure:
        raise ServicesError(f"initdb failed:\n{failure.stderr[-2000:]}") from failure
    finally:
        pwfile.unlink()


def pg_ctl(state: State, bindir: Path, account, *args: str) -> subprocess.CompletedProcess:
    return as_postgres(
        [str(bindir / "pg_ctl"), "-D", str(state.data), *args],
        account,
        capture_output=True,
        text=True,
    )


def start_postgres(state: State, bindir: Path, port: int) -> None:
    account = postgres_account()
    init_cluster(state, bindir, account)
    if pg_ctl(state, bindir, account, "status").returncode == 0:
        return
    options = f"-p {port} -c listen_addresses={HOST} -c unix_socket_directories={state.postgres}"
    log = state.postgres / "postgres.log"  # written by the cluster's user
    started = pg_ctl(
        state, bindir, account, "-w", "-t", "120", "-l", str(log), "-o", options, "start"
    )
    if started.returncode != 0:
        raise ServicesError(f"PostgreSQL did not start:\n{started.stderr}\n{tail(log)}")


def create_databases(state: State, bindir: Path, port: int) -> None:
    env = {**os.environ, "PGPASSWORD": state.password.read_text()}
    connect = ["-h", HOST, "-p", str(port), "-U", PG_SUPERUSER]
    for database in DATABASES:
        exists = subprocess.run(
            [
                str(bindir / "psql"),
                *connect,
                "-d",
                "postgres",
                "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname = '{database}'",
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        if exists.returncode != 0:
            raise ServicesError(f"psql failed: {exists.stderr.strip()}")
        if exists.stdout.strip() != "1":
            subprocess.run([str(bindir / "createdb"), *connect, database], env=env, check=True)


def database_url(state: State, port: int, database: str, driver: str = "postgresql") -> str:
    password = state.password.read_text()
    return f"{driver}://{PG_SUPERUSER}:{password}@{HOST}:{port}/{database}"


def postgres_running(state: State, bindir: Path) -> bool:
    return pg_ctl(state, bindir, postgres_account(), "status").returncode == 0


def stop_postgres(state: State, bindir: Path) -> None:
    """pg_ctl stop -m fast: the open connections are closed, the data is kept."""
    if not (state.data / "postmaster.pid").exists():
        return
    stopped = pg_ctl(state, bindir, postgres_account(), "-w", "-m", "fast", "stop")
    if stopped.returncode != 0 and (state.data / "postmaster.pid").exists():
        raise ServicesError(f"PostgreSQL did not stop: {stopped.stderr.strip()}")
