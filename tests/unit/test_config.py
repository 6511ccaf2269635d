"""Settings come from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from etar import resources
from etar.config import Settings
from tests import REPO_ROOT


def test_defaults_point_at_the_native_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ETAR_KAFKA_BOOTSTRAP_SERVERS", "ETAR_SCHEMA_REGISTRY_URL", "ETAR_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.kafka_port == 9092 and settings.schema_registry_port == 8081
    assert settings.state_dir == Path.cwd() / ".etar"


def test_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETAR_KAFKA_BOOTSTRAP_SERVERS", "broker:29092")
    monkeypatch.setenv("ETAR_KAFKA_TOPIC_PARTITIONS", "12")
    monkeypatch.setenv("ETAR_SCHEMA_REGISTRY_URL", "http://schema-registry:8085")
    monkeypatch.setenv("ETAR_STATE_DIR", "/tmp/etar-state")
    settings = Settings(_env_file=None)
    assert settings.kafka_port == 29092 and settings.kafka_topic_partitions == 12
    assert settings.schema_registry_port == 8085
    assert str(settings.state_dir) == "/tmp/etar-state"


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETAR_KAFKA_TOPIC_PARTITIONS", "0")
    with pytest.raises(ValidationError, match="kafka_topic_partitions"):
        Settings(_env_file=None)


def test_env_example_lists_every_setting() -> None:
    example = (REPO_ROOT / ".env.example").read_text()
    names = {line.split("=", 1)[0] for line in example.splitlines()
             if line and not line.startswith("#")}
    etar_names = {name for name in names if name.startswith("ETAR_")}
    assert etar_names == {f"ETAR_{name.upper()}" for name in Settings.model_fields}


def test_relative_paths_and_env_file_come_from_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ETAR_STATE_DIR", "ETAR_KAFKA_TOPIC", "ETAR_PROJECT_DIR"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text("ETAR_KAFKA_TOPIC=from_dotenv\nETAR_STATE_DIR=state\n")
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.kafka_topic == "from_dotenv"
    assert settings.state_dir == tmp_path / "state"
    assert settings.project_dir == tmp_path


def test_the_retention_has_one_source() -> None:
    hours = resources.table_retention_hours()
    assert Settings(_env_file=None).clickhouse_retention_hours == hours
    assert f"toIntervalHour({hours})" in resources.text(resources.TABLE_SQL)


def test_a_kernel_in_notebooks_finds_the_project_env_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from etar.config import get_settings

    (tmp_path / ".env").write_text("ETAR_KAFKA_TOPIC=from_project\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.delenv("ETAR_KAFKA_TOPIC", raising=False)
    monkeypatch.setenv("ETAR_PROJECT_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path / "notebooks")
    get_settings.cache_clear()
    try:
        assert get_settings().kafka_topic == "from_project"
    finally:
        get_settings.cache_clear()
