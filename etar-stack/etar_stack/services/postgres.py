"""PostgreSQL for Airflow's metadata DB and Celery results: Debian's server, the stack's cluster.

The cluster lives in ``<state>/data/postgres`` (as root: under :data:`FALLBACK_ROOT`, since
the state folder is 0700 and the server runs as ``postgres``), is created by ``initdb`` on
first start (UTF-8, peer auth on the unix socket for the ``postgres`` superuser, SCRAM on
TCP), listens on ``bind_host:postgres_port`` and keeps its socket in ``<state>/run/postgres``.
PostgreSQL refuses to run as root, so when etar runs as root the server (and ``initdb``,
``psql``) run as the ``postgres`` system user, who owns the data folder and must reach it.
"""

from __future__ import annotations

import grp
import hashlib
import logging
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

from etar.config import Settings
from etar.errors import StackError
from etar.security import require_secrets
from etar_stack.supervisor import Service

log = logging.getLogger(__name__)

SYSTEM_USER = "postgres"


def _bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` (Debian's layout), if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda path: int(path.parent.parent.name)
                   if path.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


def bin_dir() -> Path:
    """Debian's PostgreSQL binaries, or a clear error when the package is missing."""
    found = _bin_dir()
    if found is None:
        raise StackError("PostgreSQL is not installed: `make install` (as root) installs "
                         "Debian's postgresql, or `apt-get install postgresql`")
    return found


def _tool(name: str) -> str:
    """Path of a PostgreSQL program (a placeholder when missing: ``prepare`` reports it)."""
    return str((_bin_dir() or Path("/usr/lib/postgresql/15/bin")) / name)


FALLBACK_ROOT = Path("/var/lib/etar-postgres")
"""Where the cluster lives when the server runs as the ``postgres`` user (etar run as root):
the state folder is private (0700), so that user cannot reach it. One folder per state folder."""


def _home(settings: Settings) -> Path:
    """The state folder, or (as root) its stand-in under :data:`FALLBACK_ROOT`.

    Decided without looking at the folder: the service's command is built before the
    supervisor creates or tightens the state folder, and both must name the same place.
    """
    if _as_root():
        key = hashlib.sha256(str(settings.state_dir).encode()).hexdigest()[:12]
        return FALLBACK_ROOT / key
    return settings.state_dir


def data_dir(settings: Settings) -> Path:
    return _home(settings) / "data" / "postgres"


def socket_dir(settings: Settings) -> Path:
    return _home(settings) / "run" / "postgres"


def _as_root() -> bool:
    return os.geteuid() == 0


def _runas() -> list[str]:
    """Prefix running a command as the ``postgres`` user (exec'd directly, no extra process,
    so signals reach the server itself)."""
    if not _as_root():
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise StackError("setpriv (util-linux) is needed to run PostgreSQL as the postgres user")
    return [setpriv, f"--reuid={SYSTEM_USER}", f"--regid={SYSTEM_USER}", "--init-groups", "--"]


def unreachable_folder(path: Path, user: str = SYSTEM_USER) -> Path | None:
    """The first folder above ``path`` that ``user`` cannot traverse, or None."""
    entry = pwd.getpwnam(user)
    groups = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    for folder in reversed(path.parents):
        if not folder.exists():  # created later by root, 0755: traversable
            break
        info = folder.stat()
        if info.st_uid == entry.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return folder
    return None


def _own(path: Path) -> None:
    """Create ``path`` (0700) owned by the server's user."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    if not _as_root():
        return
    entry = pwd.getpwnam(SYSTEM_USER)
    if path.stat().st_uid != entry.pw_uid:
        for item in (path, *path.rglob("*")):
            os.lchown(item, entry.pw_uid, entry.pw_gid)


def _move_cluster(old: Path, new: Path) -> None:
    """A cluster made in the state folder before the folder became private (0700) moves to
    where the postgres user can reach it, once (Airflow's metadata is kept)."""
    if new == old or not (old / "PG_VERSION").exists() or (new / "PG_VERSION").exists():
        return
    log.warning("moving the PostgreSQL cluster %s to %s: the postgres user cannot reach the "
                "private state folder", old, new)
    if new.is_dir() and not any(new.iterdir()):
        new.rmdir()
    shutil.move(old, new)


def prepare(settings: Settings) -> None:
    """Check the data folder is reachable, then ``initdb`` it on first start."""
    require_secrets(settings, settings.bind_host, "airflow_postgres_password")
    initdb = bin_dir() / "initdb"
    data = data_dir(settings)
    if _as_root():
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError as exc:
            raise StackError("no `postgres` system user: install Debian's postgresql "
                             "(`make install`)") from exc
        if not data.is_relative_to(settings.state_dir):
            log.info("the postgres user cannot reach %s (private, 0700): the cluster lives in "
                     "%s instead", settings.state_dir, data)
        data.parent.mkdir(parents=True, exist_ok=True)
        _move_cluster(settings.state_dir / "data" / "postgres", data)
        blocked = unreachable_folder(data)
        if blocked is not None:
            raise StackError(
                f"PostgreSQL runs as the `postgres` user, who cannot enter {blocked} "
                f"(mode {stat.filemode(blocked.stat().st_mode)}), a parent of {data}. "
                f"Allow it (`chmod o+x {blocked}`) or point ETAR_STATE_DIR somewhere it can reach.")
    _own(socket_dir(settings))
    if (data / "PG_VERSION").exists():
        _own(data)
        return
    _own(data)
    subprocess.run(
        [*_runas(), str(initdb), "-D", str(data), "-U", "postgres",
         "-E", "UTF8", "--locale=C.UTF-8", "--auth-local=peer", "--auth-host=scram-sha-256"],
        check=True, capture_output=True, text=True, cwd="/",
    )


def command(settings: Settings) -> list[str]:
    return [*_runas(), _tool("postgres"), "-D", str(data_dir(settings)),
            "-p", str(settings.postgres_port), "-k", str(socket_dir(settings)),
            "-c", f"listen_addresses={settings.bind_host}", "-c", "shared_buffers=64MB",
            "-c", "max_connections=150", "-c", "fsync=on", "-c", "logging_collector=off"]


def ready(settings: Settings) -> bool:
    """The server accepts connections (``pg_isready``; no credentials needed)."""
    return subprocess.run(
        [_tool("pg_isready"), "-q", "-h", settings.bind_host,
         "-p", str(settings.postgres_port), "-t", "2"], check=False).returncode == 0


def psql(settings: Settings, sql: str, database: str = "postgres") -> str:
    """Run SQL as the superuser over the unix socket (SQL on stdin: no secret in argv)."""
    result = subprocess.run(
        [*_runas(), _tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
         "-h", str(socket_dir(settings)), "-p", str(settings.postgres_port),
         "-U", "postgres", "-d", database],
        input=sql, capture_output=True, text=True, check=False, cwd="/",
    )
    if result.returncode != 0:
        raise StackError(f"psql failed: {result.stderr.strip()}")
    return result.stdout


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def ensure_airflow_db(settings: Settings) -> None:
    """The Airflow role (password from settings, kept in sync) and its UTF-8 database."""
    user, db = settings.airflow_postgres_user, settings.airflow_postgres_db
    password = settings.airflow_postgres_password.get_secret_value()
    psql(settings, f"""
SELECT 'CREATE ROLE {_ident(user)} LOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_literal(user)}) \\gexec
ALTER ROLE {_ident(user)} WITH LOGIN PASSWORD {_literal(password)};
SELECT 'CREATE DATABASE {_ident(db)} OWNER {_ident(user)} ENCODING ''UTF8'' TEMPLATE template0'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = {_literal(db)}) \\gexec
""")


def service(settings: Settings) -> Service:
    return Service(
        name="postgres",
        command=command(settings),
        port=settings.postgres_port,
        url=f"postgresql://{settings.bind_host}:{settings.postgres_port}"
            f"/{settings.airflow_postgres_db}",
        ready=lambda: ready(settings),
        prepare=lambda: prepare(settings),
        after_start=lambda: ensure_airflow_db(settings),
        start_timeout=60,
    )
