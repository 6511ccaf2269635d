"""Airflow 3 on the native stack: api-server, scheduler, dag-processor, triggerer, Celery worker.

Every component is configured only through ``AIRFLOW__…`` / ``AIRFLOW_CONN_…`` variables
derived from :class:`~etar.config.Settings` (:func:`airflow_env`, reusable for ``airflow dags
test`` and the CLI), so secrets never appear on a command line and all components share the
same JWT secret, API secret key and Fernet key. ``AIRFLOW_HOME`` is ``<state>/airflow`` (logs,
the simple auth manager's passwords file); the metadata DB is the stack's Postgres, the broker
its Redis.

Readiness: the api-server answers ``/api/v2/monitor/health`` with a healthy metadatabase; the
scheduler, dag-processor and triggerer are ready once that endpoint reports their job
healthy with a heartbeat newer than their start (no CLI call: each costs seconds of imports);
the worker once it answers a Celery ``ping`` broadcast on the stack's broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from urllib.parse import quote

import httpx

from etar.config import AIRFLOW_CLUSTER_WORKERS, Settings
from etar.errors import StackError
from etar.security import require_secrets
from etar_stack.services import redis
from etar_stack.supervisor import Service

HEALTH_PATH = "/api/v2/monitor/health"


def home(settings: Settings) -> Path:
    return settings.state_dir / "airflow"


def passwords_file(settings: Settings) -> Path:
    return home(settings) / "simple_auth_manager_passwords.json"


def _db_url(settings: Settings, scheme: str) -> str:
    user = quote(settings.airflow_postgres_user, safe="")
    password = quote(settings.airflow_postgres_password.get_secret_value(), safe="")
    return (f"{scheme}://{user}:{password}@{settings.bind_host}:{settings.postgres_port}"
            f"/{settings.airflow_postgres_db}")


def connections(settings: Settings) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` variables (JSON form) for the connections the DAGs use."""
    spark = {"conn_type": "spark", "host": settings.spark_master,
             "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"}}
    s3 = {"conn_type": "aws", "login": settings.s3_access_key,
          "password": settings.s3_secret_key.get_secret_value(),
          "extra": {"endpoint_url": settings.s3_endpoint, "region_name": settings.s3_region}}
    dashboard = {"conn_type": "http", "host": settings.dashboard_api_url,
                 "password": settings.dashboard_token.get_secret_value()}
    return {
        # A missing spark_default would mean YARN: always give the master.
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(spark),
        "AIRFLOW_CONN_ETAR_S3": json.dumps(s3),
        "AIRFLOW_CONN_ETAR_DASHBOARD": json.dumps(dashboard),
    }


def airflow_env(settings: Settings) -> dict[str, str]:
    """The environment of every Airflow process of the native stack (and of ``airflow`` CLI
    calls against it): the whole configuration, derived from ``settings``."""
    api = settings.airflow_api_url.rstrip("/")
    bindir = str(Path(sys.executable).parent)  # spark-submit, airflow, celery of this venv
    path = os.environ.get("PATH", "")
    return {
        "AIRFLOW_HOME": str(home(settings)),
        "PATH": path if bindir in path.split(os.pathsep) else f"{bindir}{os.pathsep}{path}",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DEFAULT_TIMEZONE": "utc",
        # New DAGs wait for an explicit unpause (`etar up` / the tests unpause etar_pipeline).
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__FERNET_KEY": settings.airflow_fernet_key.get_secret_value(),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow_admin_user}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(settings)),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _db_url(settings, "postgresql+psycopg2"),
        "AIRFLOW__CELERY__BROKER_URL": redis.broker_url(settings),
        "AIRFLOW__CELERY__RESULT_BACKEND": _db_url(settings, "db+postgresql"),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(settings.airflow_worker_concurrency),
        # Airflow's Celery defaults plus etar's task modules, imported before the pool forks.
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS":
            "etar_stack.services.airflow_celery.CELERY_CONFIG",
        # Redis redelivers a task not acknowledged within this time (default 24 h, warned).
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(settings.airflow_worker_log_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(settings.airflow_triggerer_log_port),
        "AIRFLOW__API__HOST": settings.bind_host,
        "AIRFLOW__API__PORT": str(settings.airflow_api_port),
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__API__SECRET_KEY": settings.airflow_secret_key.get_secret_value(),
        "AIRFLOW__API_AUTH__JWT_SECRET": settings.airflow_jwt_secret.get_secret_value(),
        # A per-minute DAG: the scheduler loops every 0.1 s when idle, so a run is created at
        # its minute's end and each task is queued as soon as the one before it finished
        # (at 0.5 s, each of the four hand-offs of a minute could wait up to half a second).
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.1",
        # A task whose worker died (kill -9, OOM) is failed and retried after this long
        # without a heartbeat instead of the default 5 minutes: a per-minute DAG cannot wait.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        # A task's supervisor waits this long in one select(); when the task process closed its
        # pipes before exiting, the slot stays taken that long after the task ended (default 5 s,
        # which held the next minute's task back).
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        **connections(settings),
    }


def _airflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "airflow", *args]


SECRETS = ("airflow_admin_password", "airflow_jwt_secret", "airflow_secret_key",
           "airflow_fernet_key")
"""Every component's secrets: refused off loopback while empty or the published defaults."""


def guard(settings: Settings) -> None:
    require_secrets(settings, settings.bind_host, *SECRETS)


def prepare_api_server(settings: Settings) -> None:
    """The first component: the passwords file, then ``airflow db migrate`` (idempotent)."""
    guard(settings)
    home(settings).mkdir(parents=True, exist_ok=True)
    target = passwords_file(settings)
    tmp = target.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(json.dumps(
        {settings.airflow_admin_user: settings.airflow_admin_password.get_secret_value()}))
    tmp.replace(target)
    result = subprocess.run(_airflow("db", "migrate"), env={**os.environ, **airflow_env(settings)},
                            capture_output=True, text=True, check=False, cwd=home(settings))
    if result.returncode != 0:
        raise StackError(f"airflow db migrate failed:\n{(result.stdout + result.stderr)[-3000:]}")


def health(settings: Settings) -> dict[str, dict[str, str | None]]:
    """The api-server's health document (metadatabase and each component's job)."""
    response = httpx.get(f"{settings.airflow_api_url.rstrip('/')}{HEALTH_PATH}", timeout=3)
    response.raise_for_status()
    document: dict[str, dict[str, str | None]] = response.json()
    return document


def api_ready(settings: Settings) -> bool:
    return health(settings)["metadatabase"]["status"] == "healthy"


def component_ready(settings: Settings, component: str, since: datetime | None) -> bool:
    """``component`` (scheduler, dag_processor, triggerer) is healthy, with a heartbeat from
    the process started at ``since`` (not a stale one of a previous run)."""
    state = health(settings)[component]
    if state.get("status") != "healthy":
        return False
    beat = state.get(f"latest_{component}_heartbeat")
    return since is None or (beat is not None and datetime.fromisoformat(beat) >= since)


def worker_ready(settings: Settings, node: str = "") -> bool:
    """A Celery worker (the one whose node name starts with ``node``, if given) answers a
    ``ping`` broadcast on the stack's own broker."""
    from celery import Celery

    app = Celery(broker=redis.broker_url(settings))
    try:
        replies = app.control.ping(timeout=1.0)
    finally:
        app.close()
    return any(name.startswith(node) for reply in replies or [] for name in reply)


class _Started:
    """When a component was (re)started, so its readiness ignores older heartbeats."""

    def __init__(self) -> None:
        self.at: datetime | None = None

    def mark(self, then: Callable[[], None] | None = None) -> Callable[[], None]:
        def prepare() -> None:
            if then is not None:
                then()
            self.at = datetime.now(UTC).replace(microsecond=0)
        return prepare


def _component_probe(settings: Settings, component: str, started: _Started) -> Callable[[], bool]:
    return lambda: component_ready(settings, component, started.at)


def services(settings: Settings) -> list[Service]:
    """The Airflow components, the api-server first (it migrates the DB)."""
    env = airflow_env(settings)
    api = settings.airflow_api_url.rstrip("/")
    concurrency = str(settings.airflow_worker_concurrency)
    found = [Service(
        name="airflow-api-server",
        command=_airflow("api-server"),
        port=settings.airflow_api_port,
        url=f"{api} (user {settings.airflow_admin_user})",
        ready=lambda: api_ready(settings),
        prepare=lambda: prepare_api_server(settings),
        env=env,
        start_timeout=240,
    )]
    for name, component, args in [
        ("airflow-scheduler", "scheduler", ["scheduler", "--skip-serve-logs"]),
        ("airflow-dag-processor", "dag_processor", ["dag-processor"]),
        ("airflow-triggerer", "triggerer", ["triggerer", "--skip-serve-logs"]),
    ]:
        started = _Started()
        found.append(Service(
            name=name,
            command=_airflow(*args),
            port=None,
            url=f"{api}{HEALTH_PATH} ({component})",
            ready=_component_probe(settings, component, started),
            prepare=started.mark(lambda: guard(settings)),
            env=env,
            start_timeout=180,
        ))
    workers = AIRFLOW_CLUSTER_WORKERS if settings.topology == "cluster" else 1
    for n in range(1, workers + 1):
        # Cluster: workers named apart (Celery's node name), each its own readiness; the
        # log servers are skipped, so they share no port.
        name, node = ("airflow-worker", []) if workers == 1 else (
            f"airflow-worker-{n}", ["--celery-hostname", f"etar-worker-{n}@%h"])
        found.append(Service(
            name=name,
            command=_airflow("celery", "worker", "--concurrency", concurrency,
                             "--skip-serve-logs", *node),
            port=None,
            url=f"{redis.broker_url(settings)} (Celery, concurrency {concurrency})",
            ready=partial(worker_ready, settings, f"etar-worker-{n}@" if node else ""),
            prepare=lambda: guard(settings),
            env=env,
            start_timeout=180,
        ))
    return found
