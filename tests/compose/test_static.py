"""The compose stack, checked without a Docker engine: the file as compose-go loads it, its
consistency with the native stack and settings, the connector template, environment.yml."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

from etar.config import Settings
from etar.security import ALLOW_DEFAULTS
from etar_stack import all_services as native_services
from tests import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
TEMPLATE = REPO_ROOT / "connect" / "clickhouse_connector_configuration.json"
NATIVE_TO_COMPOSE = {"kafka": "broker", "schema-registry": "schema-registry",
                     "clickhouse": "clickhouse", "sink": "connect", "s3": "s3",
                     "dashboard-api": "dashboard-api", "dashboard-ui": "dashboard-ui",
                     "postgres": "postgres", "redis": "redis",
                     "airflow-api-server": "airflow-apiserver",
                     "airflow-scheduler": "airflow-scheduler",
                     "airflow-dag-processor": "airflow-dag-processor",
                     "airflow-triggerer": "airflow-triggerer", "airflow-worker": "airflow-worker",
                     "spark-connect": "spark-master", "jupyter": "jupyter"}
INTERNAL_ONLY = {"postgres", "redis", "spark-connect"}
"""Compose keeps Postgres and Redis on its network; natively they use their own ports (5433,
6380) so they never meet ones the machine already runs. Compose analyses minutes with
spark-submit on its Spark cluster (ETAR_SPARK_MODE=submit) instead of a Connect server."""
ONE_SHOT = {"kafka-init", "clickhouse-init", "clickhouse-cluster-init", "s3-init", "airflow-init",
            "connect-helper"}


def _example_env() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def _composecheck(compose: Path, env: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    go = shutil.which("go")
    assert go, "Go is needed to run compose-go (tools/composecheck)"
    return subprocess.run([go, "run", ".", "-env", str(env), str(compose)],
                          cwd=REPO_ROOT / "tools" / "composecheck", capture_output=True,
                          text=True, timeout=600, check=False)



def test_compose_go_rejects_an_invalid_file(tmp_path: Path) -> None:
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["broker"]["healthcheck"]["retries"] = "many"
    broken["services"]["dashboard-ui"]["depends_on"]["nowhere"] = {
        "condition": "service_healthy"}
    target = tmp_path / "docker-compose.yml"
    target.write_text(yaml.safe_dump(broken))
    result = _composecheck(target)
    assert result.returncode == 1 and "invalid compose file" in result.stderr


def test_every_native_service_is_in_compose_with_its_port(project: dict[str, Any]) -> None:
    settings = Settings(_env_file=None)
    native = {service.name: service for service in native_services(settings)}
    assert set(native) == set(NATIVE_TO_COMPOSE)
    for name, service in native.items():
        compose = project[NATIVE_TO_COMPOSE[name]]
        if service.port is not None and name not in INTERNAL_ONLY:
            assert service.port in compose["ports"], (name, service.port, compose["ports"])


def test_etar_containers_use_etar_settings_names(project: dict[str, Any]) -> None:
    fields = {f"ETAR_{name.upper()}" for name in Settings.model_fields} | {ALLOW_DEFAULTS}
    for name, service in project.items():
        unknown = {key for key in service["environment"] if key.startswith("ETAR_")} - fields
        assert not unknown, (name, unknown)
    api = project["dashboard-api"]["environment"]
    assert api["ETAR_KAFKA_TOPIC"] == Settings(_env_file=None).kafka_topic
    assert api["ETAR_SCHEMA_REGISTRY_URL"] == "http://schema-registry:8081"


def test_builds_exist_and_images_are_pinned(project: dict[str, Any]) -> None:
    for name, service in project.items():
        if service.get("build"):
            dockerfile = Path(service["build"]) / service["dockerfile"]
            assert dockerfile.exists(), (name, dockerfile)
            text = dockerfile.read_text()
            assert re.search(r"^USER (?!root)", text, re.M), f"{dockerfile} runs as root"
            for image in re.findall(r"^FROM (\S+)", text, re.M):
                assert ":" in image and not image.endswith(":latest"), (dockerfile, image)
        else:
            assert ":" in service["image"] and not service["image"].endswith(":latest"), name


def test_long_running_services_have_healthchecks_and_conditions(project: dict[str, Any]
                                                               ) -> None:
    for name, service in project.items():
        if name not in ONE_SHOT and name != "producer":
            assert service["healthcheck"], f"{name} has no healthcheck"
        for dependency, condition in service["depends_on"].items():
            assert condition in ("service_healthy", "service_completed_successfully"), name
            if condition == "service_healthy":
                assert project[dependency]["healthcheck"], (name, dependency)
            else:
                assert dependency in ONE_SHOT, (name, dependency)


def test_every_variable_the_files_use_is_in_env_example() -> None:
    defined = set(_example_env())
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    assert used and used <= defined, used - defined
    assert {f"ETAR_{n.upper()}" for n in Settings.model_fields} <= defined


def test_connector_template_renders_to_a_complete_config(project: dict[str, Any]) -> None:
    helper_env = project["connect-helper"]["environment"]
    template_vars = set(re.findall(r"\$\{([A-Z0-9_]+)\}", TEMPLATE.read_text()))
    assert template_vars <= set(helper_env), template_vars - set(helper_env)
    rendered = subprocess.run(["envsubst"], input=TEMPLATE.read_text(), capture_output=True,
                              text=True, env={**os.environ, **helper_env}, check=True).stdout
    config = json.loads(rendered)
    required = {"connector.class", "topics", "hostname", "port", "database", "username",
                "password", "value.converter", "value.converter.schema.registry.url",
                "errors.tolerance", "errors.deadletterqueue.topic.name"}
    assert required <= set(config)
    assert "${" not in rendered
    settings = Settings(_env_file=None)
    assert config["connector.class"] == "com.clickhouse.kafka.connect.ClickHouseSinkConnector"
    assert config["topics"] == settings.kafka_topic
    assert config["topic2TableMap"] == f"{settings.kafka_topic}={settings.clickhouse_table}"
    assert config["errors.tolerance"] == "all"
    assert config["errors.deadletterqueue.topic.name"] == settings.kafka_dlq_topic
    assert config["errors.deadletterqueue.context.headers.enable"] == "true"
    assert config["value.converter"] == "io.confluent.connect.avro.AvroConverter"
    assert config["value.converter.schema.registry.url"] == "http://schema-registry:8081"
    assert config["hostname"] == "clickhouse"
    assert config["port"] == str(settings.clickhouse_port)


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _checkout_requirements() -> list[str]:
    """What ``uv sync`` installs in the checkout, in pyproject order without repeats: etar's
    dependencies and every extra, etar-stack's, the dev group's (the two projects aside)."""
    root = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    stack = tomllib.loads((REPO_ROOT / "etar-stack" / "pyproject.toml").read_text())
    found = [*root["project"]["dependencies"],
             *(r for extra in root["project"]["optional-dependencies"].values() for r in extra),
             *stack["project"]["dependencies"], *root["dependency-groups"]["dev"]]
    return [r for r in dict.fromkeys(found) if _name(r) not in {"etar", "etar-stack"}]


def test_environment_yml_lists_the_locked_direct_dependencies() -> None:
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    root = next(p for p in lock["package"] if p["name"] == "etar")
    stack = next(p for p in lock["package"] if p["name"] == "etar-stack")
    locked = {d["name"] for d in root["dependencies"] + stack["dependencies"]}
    locked |= {d["name"] for extra in root["optional-dependencies"].values() for d in extra}
    locked |= {d["name"] for d in root["dev-dependencies"]["dev"]}
    locked -= {"etar", "etar-stack"}
    assert {_name(r) for r in pip} == {n.replace("_", "-") for n in locked}
    assert pip == _checkout_requirements()


def test_airflow_runs_the_same_dag_with_celery_and_the_spark_cluster(
        project: dict[str, Any]) -> None:
    for name in ("airflow-scheduler", "airflow-worker", "airflow-apiserver"):
        env = project[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
        assert json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])["host"] == "spark://spark-master"
        assert env["ETAR_SPARK_MASTER"] == "spark://spark-master:7077"
        for shared in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
            assert env[shared] == project["airflow-scheduler"]["environment"][shared]


def test_kafka_init_creates_the_topics_as_the_native_stack_aligns_them(
        project: dict[str, Any]) -> None:
    """Broker time on the event topic (completeness) and a dead-letter topic that takes the
    largest event plus its error headers, as ``etar.topics.align_topics`` sets them natively."""
    from etar.topics import EVENT_TOPIC_CONFIG, dead_letter_limit

    command = " ".join(project["kafka-init"]["command"])
    event, dead_letter = command.split("&&")
    for name, value in EVENT_TOPIC_CONFIG.items():
        assert f"--config {name}={value}" in event
    assert f"--config max.message.bytes={dead_letter_limit({})}" in dead_letter
