"""The compose stack's defects of issue 26, each checked from the files without a Docker engine:
the consumer group the sensor watches, host names, the build context, image references, the
Connect image, Spark's and Airflow's settings. (Running what can run here: test_rehearsal.py.)
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography.fernet import Fernet

from etar.config import Settings
from etar_stack.services import s3 as native_s3
from tests import REPO_ROOT
from tests.compose.test_static import COMPOSE, ENV_EXAMPLE, TEMPLATE, _composecheck, _example_env

DOCKERFILES = {"etar": REPO_ROOT / "docker" / "etar.Dockerfile",
               "airflow": REPO_ROOT / "docker" / "airflow.Dockerfile",
               "connect": REPO_ROOT / "connect" / "Dockerfile",
               "connect-helper": REPO_ROOT / "connect" / "helper.Dockerfile"}
REMOVED_REPOSITORIES = ("minio/", "quay.io/minio/", "bitnami/", "docker.io/bitnami/")
"""Repositories whose images are gone from their registry (MinIO's community images from
Docker Hub in 2026, Bitnami's free catalogue in 2025): a pull fails."""
LISTEN_ANY = {"0.0.0.0", "::"}



@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """The file as YAML (anchors merged, variables not interpolated): volumes, commands."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded["services"]


# --- the sensor sees the sink's progress --------------------------------------------------


def test_the_sensor_watches_the_connect_group_and_connect_commits_often(
        project: dict[str, Any]) -> None:
    """Kafka Connect's sink task consumes as ``connect-<connector name>``; the DAG's sensor
    (airflow-worker) reads ETAR_SINK_GROUP_ID, whose default is the native sink's group."""
    connector = project["connect-helper"]["environment"]["CONNECTOR_NAME"]
    assert connector
    connect_group = f"connect-{connector}"
    assert Settings(_env_file=None).sink_group_id != connect_group
    for name in ("airflow-worker", "airflow-scheduler", "jupyter", "dashboard-api"):
        assert project[name]["environment"]["ETAR_SINK_GROUP_ID"] == connect_group, name
    flush_ms = int(project["connect"]["environment"]["CONNECT_OFFSET_FLUSH_INTERVAL_MS"])
    assert flush_ms <= 2_000, "Connect commits sink offsets every 60 s by default"


def test_connector_retry_timeout_is_in_milliseconds() -> None:
    config = json.loads(TEMPLATE.read_text())
    assert int(config["errors.retry.timeout"]) >= 10_000


# --- every host an etar container is given is a service of the file ----------------------


def _hosts(key: str, value: str) -> list[str]:
    if "://" in value and not value.lstrip().startswith("{"):
        return [urlsplit(value).hostname or ""]
    if key.endswith("_SERVERS"):
        return [server.rsplit(":", 1)[0] for server in value.split(",")]
    if key.endswith("_HOST"):
        return [value]
    return []


def test_every_host_in_the_environment_is_a_compose_service(project: dict[str, Any]) -> None:
    checked = 0
    for name, service in project.items():
        for key, value in service["environment"].items():
            if key.startswith(("KAFKA_", "SCHEMA_REGISTRY_LISTENERS")):
                continue  # the broker's / registry's own listeners
            if key.endswith("_PUBLIC_URL"):
                continue  # followed by a browser on the host (tested on its own below)
            for host in _hosts(key, value):
                if host in LISTEN_ANY and key != "ETAR_BIND_HOST":
                    continue
                assert host in project, f"{name}: {key}={value} names no service"
                checked += 1
        spark = json.loads(service["environment"].get("AIRFLOW_CONN_SPARK_DEFAULT", "{}"))
        if spark:
            assert urlsplit(spark["host"]).hostname in project
    assert checked > 50


def test_spark_drivers_advertise_their_own_service_name(project: dict[str, Any]) -> None:
    """A driver runs where spark-submit runs (client mode): airflow-worker (the DAG) and
    jupyter (notebook 04). ETAR_BIND_HOST becomes the submit's SPARK_LOCAL_IP, so it must
    be the container's own name, reachable from spark-worker (not 127.0.0.1 or 0.0.0.0)."""
    for name in ("airflow-worker", "jupyter"):
        env = project[name]["environment"]
        assert env["ETAR_SPARK_MASTER"].startswith("spark://")
        assert env["ETAR_BIND_HOST"] == name == project[name]["hostname"]


# --- the build context --------------------------------------------------------------------


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the context (its rules: the last match wins; a
    pattern that matches a folder excludes what is under it; ``**`` spans folders)."""
    parts = path.split("/")
    excluded = False
    for raw_pattern in patterns:
        negate = raw_pattern.startswith("!")
        pattern = raw_pattern.lstrip("!").strip("/")
        variants = {pattern, pattern.replace("**/", "")}
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            tail = "/".join(parts[depth - 1:depth])
            if any(fnmatch.fnmatchcase(prefix, v) for v in variants) or (
                    pattern.startswith("**/") and fnmatch.fnmatchcase(tail, pattern[3:])):
                excluded = not negate
                break
    return excluded


def test_the_build_context_leaves_out_secrets_state_and_caches() -> None:
    ignore = REPO_ROOT / ".dockerignore"
    assert ignore.exists(), "without .dockerignore every image gets .env, .git, .venv, .etar"
    patterns = [line.strip() for line in ignore.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for secret_or_state in (".env", ".env.local", ".git/config", ".venv/bin/python",
                            ".etar/data/s3/etar/x.parquet", ".etar/lib/kafka/k.jar",
                            "test-artifacts/faults.md", "runs/2026-01-01_10-30/03.ipynb",
                            "etar/__pycache__/config.cpython-311.pyc",
                            "notebooks/.ipynb_checkpoints/00_stack-checkpoint.ipynb"):
        assert _ignored(secret_or_state, patterns), secret_or_state
    # ...while every file a Dockerfile copies stays in
    for dockerfile in DOCKERFILES.values():
        for sources in re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", dockerfile.read_text(),
                                  re.M):
            for source in sources.split():
                assert (REPO_ROOT / source).exists(), (dockerfile.name, source)
                assert not _ignored(source, patterns), (dockerfile.name, source)
    for kept in (".env.example", "notebooks/00_stack.ipynb", "etar/config.py", "uv.lock"):
        assert not _ignored(kept, patterns), kept


# --- image references ---------------------------------------------------------------------


def _references(project: dict[str, Any]) -> dict[str, str]:
    """Every image pulled from a registry: compose's ``image:`` without a build, every
    ``FROM`` of the Dockerfiles (stage names aside)."""
    references = {name: s["image"] for name, s in project.items() if not s.get("build")}
    for name, dockerfile in DOCKERFILES.items():
        text = dockerfile.read_text()
        stages = set(re.findall(r"^FROM \S+ AS (\S+)", text, re.M))
        for index, image in enumerate(re.findall(r"^FROM (\S+)", text, re.M)):
            if image not in stages:
                references[f"{name}.Dockerfile#{index}"] = image
        for image in re.findall(r"COPY --from=(\S+:\S+)", text):
            references[f"{name}.Dockerfile copy"] = image
    return references


def test_every_image_is_pinned_and_from_a_live_repository(project: dict[str, Any]) -> None:
    references = _references(project)
    assert len(references) >= 12
    for where, image in references.items():
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{where}: {image} has no tag"
        assert re.search(r"\d+\.\d+", tag), f"{where}: {image} is not pinned to a version"
        assert not repository.startswith(REMOVED_REPOSITORIES), f"{where}: {image} is gone"


def test_s3_is_versitygw_at_the_native_stacks_version(project: dict[str, Any],
                                                      raw: dict[str, Any]) -> None:
    assert project["s3"]["image"] == f"versity/versitygw:{native_s3.VERSION}"
    env = project["s3"]["environment"]
    example = _example_env()
    assert env["ROOT_ACCESS_KEY_ID"] == example["ETAR_S3_ACCESS_KEY"]
    assert env["VGW_BACKEND"] == "posix" and env["VGW_BACKEND_ARG"] == "/data"
    assert "s3-data:/data" in raw["s3"]["volumes"]
    assert "health" in " ".join(raw["s3"]["healthcheck"]["test"])
    assert project["s3-init"]["depends_on"] == {"s3": "service_healthy"}
    assert project["airflow-worker"]["depends_on"]["s3-init"] == "service_completed_successfully"


def test_kafka_versions_and_log_dirs(project: dict[str, Any], raw: dict[str, Any]) -> None:
    pom = (REPO_ROOT / "etar-stack" / "etar_stack" / "poms" / "kafka.xml").read_text()
    version = re.search(r"<kafka.version>(.+)</kafka.version>", pom)
    assert version and project["broker"]["image"] == f"apache/kafka:{version[1]}"
    log_dirs = project["broker"]["environment"]["KAFKA_LOG_DIRS"]
    assert f"kafka-data:{log_dirs}" in raw["broker"]["volumes"]


# --- the Connect image ----------------------------------------------------------------------


def test_the_connect_image_needs_no_unzip_and_pins_the_connector() -> None:
    text = DOCKERFILES["connect"].read_text()
    final = text[text.rindex("\nFROM "):]
    assert "confluentinc/cp-kafka-connect:" in final
    assert "unzip" not in final, "the Connect image has no unzip"
    assert "ARG CLICKHOUSE_CONNECTOR_VERSION=v1.5.0" in text
    assert "COPY --from=connector" in final and "/usr/share/confluent-hub-components" in final


# --- Spark -------------------------------------------------------------------------------------


def test_spark_worker_scratch_and_executor_credentials(project: dict[str, Any]) -> None:
    env = project["spark-worker"]["environment"]
    etar = DOCKERFILES["etar"].read_text()
    owned = re.search(r"chown etar (\S+)", etar)
    assert owned and env["SPARK_WORKER_DIR"].startswith(owned[1] + "/"), \
        "the image's user cannot write SPARK_HOME/work"
    example = _example_env()
    assert env["AWS_ACCESS_KEY_ID"] == example["ETAR_S3_ACCESS_KEY"]
    assert env["AWS_SECRET_ACCESS_KEY"] == example["ETAR_S3_SECRET_KEY"]
    for name in ("spark-master", "spark-worker"):
        assert not any("secret" in arg.lower() for arg in project[name]["command"])


# --- Airflow -----------------------------------------------------------------------------------


def test_airflow_image_installs_the_lock_with_uv() -> None:
    text = DOCKERFILES["airflow"].read_text()
    assert "pip install" not in text and "uv export" not in text
    assert re.search(r"^RUN uv sync --frozen --no-dev", text, re.M)
    assert "ETAR_PROJECT_DIR=/opt/etar" in text and "COPY notebooks notebooks" in text
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert "pyspark-client; sys_platform == 'never'" in pyproject


def test_airflow_services_follow_airflows_own_file(project: dict[str, Any]) -> None:
    assert project["redis"]["image"].startswith("redis:7.2.")
    Fernet(project["airflow-scheduler"]["environment"]["AIRFLOW__CORE__FERNET_KEY"])
    assert project["airflow-worker"]["depends_on"]["airflow-apiserver"] == "service_healthy"
    example = _example_env()
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-worker"):
        env = project[name]["environment"]
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == example["ETAR_AIRFLOW_JWT_SECRET"]
        assert env["AIRFLOW__CORE__FERNET_KEY"] == example["ETAR_AIRFLOW_FERNET_KEY"]


def test_the_api_server_writes_the_password_file_it_reads(project: dict[str, Any],
                                                          tmp_path: Path) -> None:
    """The api-server's own command writes the file, then execs the server (a stand-in
    `airflow` here shows what it would read)."""
    service = project["airflow-apiserver"]
    env = service["environment"]
    assert "simple_auth" not in " ".join(project["airflow-init"]["command"])
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "airflow").write_text('#!/bin/sh\necho "$@"\n'
                                  'cat "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"\n')
    (fake / "airflow").chmod(0o755)
    passwords = tmp_path / "passwords.json"
    run_env = {**env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
               "PATH": f"{fake}:{os.environ['PATH']}"}
    result = subprocess.run(service["command"], env=run_env, capture_output=True, text=True,
                            timeout=30, check=True)
    first, _, written = result.stdout.partition("\n")
    assert first == "api-server"
    user = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(":")[0]
    assert json.loads(written) == {user: _example_env()["ETAR_AIRFLOW_ADMIN_PASSWORD"]}


# --- ClickHouse, the dashboard UI -------------------------------------------------------------


def test_clickhouse_schema_follows_the_settings(project: dict[str, Any],
                                                raw: dict[str, Any]) -> None:
    """The table is created by the native stack's own schema step in a one-shot container, in
    ETAR_CLICKHOUSE_DATABASE (the server's initdb SQL would land in `default`)."""
    assert not any(volume.endswith(".sql") or "initdb.d:" in volume
                   for volume in raw["clickhouse"].get("volumes", []))
    init = project["clickhouse-init"]
    assert "warehouse.apply_schema()" in " ".join(init["command"])
    assert init["environment"]["ETAR_CLICKHOUSE_DATABASE"] == \
        project["clickhouse"]["environment"]["CLICKHOUSE_DB"]
    assert init["depends_on"] == {"clickhouse": "service_healthy"}
    assert project["connect-helper"]["depends_on"]["clickhouse-init"] == \
        "service_completed_successfully"


def test_published_ports_follow_the_settings(tmp_path: Path) -> None:
    env = tmp_path / "shifted.env"
    shifted = {"ETAR_DASHBOARD_UI_PORT": "18501", "ETAR_JUPYTER_PORT": "18888",
               "ETAR_CLICKHOUSE_PORT": "18123"}
    env.write_text("".join(f"{k}={shifted.get(k, v)}\n" for k, v in _example_env().items()))
    result = _composecheck(COMPOSE, env)
    assert result.returncode == 0, result.stderr
    project = json.loads(result.stdout)
    for name, port, target in (("dashboard-ui", 18501, 8501), ("jupyter", 18888, 8888),
                               ("clickhouse", 18123, 8123)):
        assert project[name]["ports"] == [port] and project[name]["targets"] == [target], name
    ui = " ".join(project["dashboard-ui"]["command"])
    assert "--server.port 8501" in ui
    assert ENV_EXAMPLE.exists()


def test_the_server_gets_the_read_only_user_the_native_endpoint_has(
        project: dict[str, Any], raw: dict[str, Any], tmp_path: Path) -> None:
    """clickhouse-server runs docker/clickhouse/reader.sh on its first start: the reader of the
    settings, with their `readonly`, SELECT on the pipeline's database only. Run here with a
    stand-in `clickhouse` that prints the SQL, which the engine's own parser must accept (a
    password with a quote and a backslash stays one literal)."""
    server = project["clickhouse"]
    mounts = [v for v in raw["clickhouse"]["volumes"] if "docker-entrypoint-initdb.d" in v]
    assert mounts == ["./docker/clickhouse/reader.sh:/docker-entrypoint-initdb.d/reader.sh:ro"]
    script = REPO_ROOT / "docker" / "clickhouse" / "reader.sh"
    assert os.access(script, os.X_OK)
    stand_in = tmp_path / "clickhouse"
    stand_in.write_text('#!/bin/sh\nwhile [ "$1" != --query ]; do shift; done\nprintf %s "$2"\n')
    stand_in.chmod(0o755)
    env = {**server["environment"], "ETAR_CLICKHOUSE_READER_PASSWORD": "it's a \\ secret",
           "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    sql = subprocess.run([str(script)], env={k: str(v) for k, v in env.items()},
                         capture_output=True, text=True, check=True, timeout=30).stdout
    statements = [s.strip() for s in sql.split(";") if s.strip()]
    assert len(statements) == 2
    canonical = []
    for statement in statements:
        literal = "'" + statement.replace("\\", "\\\\").replace("'", "\\'") + "'"
        # the engine in a process of its own (chdb allows one embedded server per process)
        parsed = subprocess.run(
            [sys.executable, "-c", "import chdb, sys; print(chdb.query(sys.argv[1], "
             "'TabSeparatedRaw'))", f"SELECT formatQuerySingleLine({literal})"],
            capture_output=True, text=True, check=True, timeout=60)
        canonical.append(parsed.stdout.strip())
    user, database = server["environment"]["ETAR_CLICKHOUSE_READER_USER"], \
        server["environment"]["CLICKHOUSE_DB"]
    assert canonical[0].startswith(f"CREATE USER IF NOT EXISTS {user} IDENTIFIED WITH "
                                   "sha256_password BY 'it\\'s a \\\\ secret'")
    assert canonical[0].endswith(
        f"SETTINGS readonly = {server['environment']['ETAR_CLICKHOUSE_READER_READONLY']}")
    assert canonical[1] == f"GRANT SELECT ON {database}.* TO {user}"


def _state_dir(dockerfile: str) -> str:
    found = re.search(r"ETAR_STATE_DIR=(\S+)", (REPO_ROOT / "docker" / dockerfile).read_text())
    assert found, dockerfile
    return found.group(1)


def test_executed_notebooks_reach_the_dashboard_api_and_a_browser(
        project: dict[str, Any], raw: dict[str, Any]) -> None:
    """The replay DAG writes executed notebooks under the Airflow image's state dir; the
    dashboard API serves them from its own (etar image): one volume at both
    `<state dir>/airflow/runs`. Their links are followed by a browser on the host, so they
    name the API's published port, not the compose network's `dashboard-api`."""
    def runs_volume(service: str) -> list[str]:
        return [v for v in raw[service]["volumes"] if v.startswith("notebook-runs:")]

    airflow_runs = f"{_state_dir('airflow.Dockerfile')}/airflow/runs"
    for service in ("airflow-worker", "airflow-scheduler"):
        assert runs_volume(service) == [f"notebook-runs:{airflow_runs}"], service
    assert runs_volume("dashboard-api") == [
        f"notebook-runs:{_state_dir('etar.Dockerfile')}/airflow/runs:ro"]
    dockerfile = (REPO_ROOT / "docker" / "airflow.Dockerfile").read_text()
    assert f"mkdir -p {airflow_runs}" in dockerfile  # a new volume takes the image's owner

    public = project["airflow-worker"]["environment"]["ETAR_DASHBOARD_API_PUBLIC_URL"]
    published = project["dashboard-api"]["ports"][0]
    assert urlsplit(public).port == published
    assert urlsplit(public).hostname in {"127.0.0.1", "localhost"}
