"""The Airflow components' configuration, derived from Settings (pure logic, no process)."""

from __future__ import annotations

import json
import pwd
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from etar.config import Settings
from etar_stack.services import airflow, postgres, redis


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


SECRETS = {
    "airflow_postgres_password": "pg-s3cret/with@odd:chars",
    "airflow_admin_password": "admin-s3cret",
    "airflow_jwt_secret": "jwt-s3cret",
    "airflow_secret_key": "api-s3cret",
    "airflow_fernet_key": "ZmVybmV0LWtleS1mb3ItdGVzdHMtMzItYnl0ZXMhISE=",
    "s3_secret_key": "s3-s3cret",
    "dashboard_token": "dash-s3cret",
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state", airflow_dags_folder=tmp_path / "dags",
        postgres_port=15433, redis_port=16380, airflow_api_url="http://127.0.0.1:18080",
        airflow_worker_concurrency=3,
        **{name: SecretStr(value) for name, value in SECRETS.items()},
    )


def test_the_components_in_order(settings: Settings) -> None:
    names = [service.name for service in airflow.services(settings)]
    assert names == ["airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                     "airflow-triggerer", "airflow-worker"]


def test_every_component_shares_one_configuration(settings: Settings) -> None:
    envs = [service.env for service in airflow.services(settings)]
    assert all(env == envs[0] for env in envs)
    env = envs[0]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "jwt-s3cret"
    assert env["AIRFLOW__API__SECRET_KEY"] == "api-s3cret"
    assert env["AIRFLOW__CORE__FERNET_KEY"] == SECRETS["airflow_fernet_key"]
    assert env == airflow.airflow_env(settings)


def test_executor_broker_backend_and_api(settings: Settings) -> None:
    env = airflow.airflow_env(settings)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__DEFAULT_TIMEZONE"] == "utc"
    assert env["AIRFLOW_HOME"] == str(settings.state_dir / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(settings.dags_folder)
    broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "127.0.0.1", 16380)
    assert env["AIRFLOW__CELERY__BROKER_URL"] == redis.broker_url(settings)
    db = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (db.scheme, db.hostname, db.port, db.path) == (
        "postgresql+psycopg2", "127.0.0.1", 15433, "/airflow")
    assert db.password is not None  # quoted: '/', '@' and ':' survive the URL
    backend = urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"])
    assert (backend.scheme, backend.hostname, backend.port) == ("db+postgresql", "127.0.0.1",
                                                                 15433)
    assert env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "3"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert (env["AIRFLOW__API__HOST"], env["AIRFLOW__API__PORT"]) == ("127.0.0.1", "18080")


def test_db_password_is_url_quoted(settings: Settings) -> None:
    from urllib.parse import unquote

    db = urlsplit(airflow.airflow_env(settings)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert unquote(db.password or "") == SECRETS["airflow_postgres_password"]


def test_connections(settings: Settings) -> None:
    env = airflow.airflow_env(settings)
    spark = json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])
    assert (spark["conn_type"], spark["host"]) == ("spark", settings.spark_master)
    s3 = json.loads(env["AIRFLOW_CONN_ETAR_S3"])
    assert s3["conn_type"] == "aws"
    assert s3["extra"]["endpoint_url"] == settings.s3_endpoint
    dashboard = json.loads(env["AIRFLOW_CONN_ETAR_DASHBOARD"])
    assert (dashboard["conn_type"], dashboard["host"]) == ("http", settings.dashboard_api_url)


def test_worker_concurrency_on_its_command_line(settings: Settings) -> None:
    worker = airflow.services(settings)[-1]
    assert worker.command[worker.command.index("--concurrency") + 1] == "3"


def test_no_secret_on_any_command_line(settings: Settings) -> None:
    commands = [service.command for service in (
        postgres.service(settings), redis.service(settings), *airflow.services(settings))]
    text = "\0".join("\0".join(command) for command in commands)
    for value in SECRETS.values():
        assert value not in text


def test_services_bind_to_loopback(settings: Settings) -> None:
    assert "127.0.0.1" in redis.service(settings).command
    assert "listen_addresses=127.0.0.1" in postgres.service(settings).command


def test_passwords_file_is_written_before_the_api_server(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    class Done:
        returncode, stdout, stderr = 0, "", ""

    def run(command: list[str], **kwargs: object) -> Done:
        calls.append(command)
        assert airflow.passwords_file(settings).exists()
        return Done()

    monkeypatch.setattr(airflow.subprocess, "run", run)
    airflow.prepare_api_server(settings)
    assert calls and calls[0][-2:] == ["db", "migrate"]
    path = airflow.passwords_file(settings)
    assert json.loads(path.read_text()) == {"admin": "admin-s3cret"}
    assert path.stat().st_mode & 0o077 == 0


@pytest.mark.skipif(not _has_user("postgres"), reason="no postgres system user")
def test_unreachable_parent_is_found(tmp_path: Path) -> None:
    closed = tmp_path / "home"
    data = closed / "checkout" / "data"
    data.parent.mkdir(parents=True)
    closed.chmod(0o700)
    try:
        # The first folder the postgres user cannot enter: ``closed`` or one above it
        # (pytest's own temp root is 0700 too).
        assert postgres.unreachable_folder(data) in (closed, *closed.parents)
    finally:
        closed.chmod(0o755)
    assert postgres.unreachable_folder(data) != closed


def test_default_jwt_secret_is_long_enough_for_hs512() -> None:
    assert len(Settings().airflow_jwt_secret.get_secret_value().encode()) >= 64


def test_postgres_data_lives_where_the_postgres_user_can_reach_it() -> None:
    import os
    import shutil
    import uuid

    from etar_stack.services import postgres

    base = Path("/tmp") / f"etar-test-{uuid.uuid4().hex[:8]}"
    fresh = Settings(_env_file=None, state_dir=base / "not-yet" / ".etar")
    if os.geteuid() != 0:  # the server runs as whoever runs etar: the state folder is theirs
        assert postgres.data_dir(fresh) == fresh.state_dir / "data" / "postgres"
        return
    # As root the server runs as `postgres`, who cannot enter the private (0700) state folder:
    # the same place before the folder exists and after, whatever its mode.
    assert postgres.data_dir(fresh).is_relative_to(postgres.FALLBACK_ROOT)
    try:
        (base / "closed").mkdir(mode=0o700, parents=True)
        hidden = Settings(_env_file=None, state_dir=base / "closed" / ".etar")
        assert postgres.data_dir(hidden).is_relative_to(postgres.FALLBACK_ROOT)
        assert postgres.data_dir(hidden) != postgres.data_dir(fresh)
    finally:
        shutil.rmtree(base, ignore_errors=True)
