"""The guards' pure logic: loopback or not, the explicit override, empty and default secrets,
the private state folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from etar.config import Settings
from etar.errors import ConfigError
from etar.security import refuse_unauthenticated_bind, require_secrets, secure_state_dir

OFF = ["0.0.0.0", "::", "10.0.0.5", "[2001:db8::1]", "etar.example"]
ON = ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]


@pytest.fixture(autouse=True)
def no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ETAR_ALLOW_DEFAULT_SECRETS", "ETAR_ALLOW_UNAUTHENTICATED_BIND"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("host", OFF)
def test_an_unauthenticated_service_is_refused_off_loopback(host: str) -> None:
    with pytest.raises(ConfigError, match="ETAR_ALLOW_UNAUTHENTICATED_BIND=1") as refused:
        refuse_unauthenticated_bind(Settings(_env_file=None), host, "the schema registry")
    assert "the schema registry" in str(refused.value) and host in str(refused.value)
    refuse_unauthenticated_bind(Settings(_env_file=None, allow_unauthenticated_bind=True), host,
                                "the schema registry")


@pytest.mark.parametrize("host", ON)
def test_loopback_needs_no_override(host: str) -> None:
    refuse_unauthenticated_bind(Settings(_env_file=None), host, "Redis")
    require_secrets(Settings(_env_file=None, jupyter_token=SecretStr("")), host,
                    "jupyter_token", "s3_secret_key")


def test_the_override_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETAR_ALLOW_UNAUTHENTICATED_BIND", "1")
    refuse_unauthenticated_bind(Settings(_env_file=None), "0.0.0.0", "Spark Connect")
    monkeypatch.setenv("ETAR_ALLOW_UNAUTHENTICATED_BIND", "0")
    with pytest.raises(ConfigError):
        refuse_unauthenticated_bind(Settings(_env_file=None), "0.0.0.0", "Spark Connect")


@pytest.mark.parametrize("host", OFF)
def test_secrets_off_loopback_must_be_set_and_not_the_default(host: str) -> None:
    with pytest.raises(ConfigError, match="ETAR_S3_SECRET_KEY"):
        require_secrets(Settings(_env_file=None), host, "s3_secret_key")
    with pytest.raises(ConfigError, match="empty ETAR_JUPYTER_TOKEN"):
        require_secrets(Settings(_env_file=None, jupyter_token=SecretStr("")), host,
                        "jupyter_token")
    require_secrets(Settings(_env_file=None, jupyter_token=SecretStr("mine-and-long")), host,
                    "jupyter_token")


def test_the_state_folder_is_created_private(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        state = secure_state_dir(tmp_path / "a" / ".etar")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_an_existing_state_folder_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / ".etar"
    (state / "logs").mkdir(parents=True)
    state.chmod(0o755)
    (state / "logs" / "x.log").write_text("kept")
    secure_state_dir(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert (state / "logs" / "x.log").read_text() == "kept"
