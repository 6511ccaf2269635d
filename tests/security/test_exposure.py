"""Off loopback, every native service refuses to start with a published (or empty) secret, and
services without authentication refuse unless ETAR_ALLOW_UNAUTHENTICATED_BIND says so; the
state folder is private (0700)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from etar.config import Settings
from etar.errors import ConfigError
from etar_stack import all_services

UNAUTHENTICATED = {"kafka", "schema-registry", "dashboard-ui", "spark-connect", "redis"}
AIRFLOW = ["ETAR_AIRFLOW_ADMIN_PASSWORD", "ETAR_AIRFLOW_JWT_SECRET", "ETAR_AIRFLOW_SECRET_KEY",
           "ETAR_AIRFLOW_FERNET_KEY"]
SECRETS = {"dashboard-api": ["ETAR_DASHBOARD_TOKEN"], "s3": ["ETAR_S3_SECRET_KEY"],
           "postgres": ["ETAR_AIRFLOW_POSTGRES_PASSWORD"], "jupyter": ["ETAR_JUPYTER_TOKEN"],
           "clickhouse": ["ETAR_CLICKHOUSE_PASSWORD", "ETAR_CLICKHOUSE_READER_PASSWORD"],
           **{name: AIRFLOW for name in ("airflow-api-server", "airflow-scheduler",
                                         "airflow-dag-processor", "airflow-triggerer",
                                         "airflow-worker")}}
ELSEWHERE = {"sink"}
"""The sink listens on nothing. (ClickHouse's endpoint also guards its users itself, when
started alone: tests/security/test_stack_security.py.)"""


@pytest.fixture
def no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ETAR_ALLOW_DEFAULT_SECRETS", "ETAR_ALLOW_UNAUTHENTICATED_BIND"):
        monkeypatch.delenv(name, raising=False)


def _off_loopback(tmp_path: Path, **values: object) -> Settings:
    return Settings(_env_file=None, bind_host="0.0.0.0", state_dir=tmp_path / ".etar",
                    project_dir=Path.cwd(), **values)


def test_every_service_is_classified(tmp_path: Path) -> None:
    """A new service must say how it is guarded (a secret, or none at all)."""
    names = {service.name for service in all_services(_off_loopback(tmp_path))}
    assert names == UNAUTHENTICATED | set(SECRETS) | ELSEWHERE


@pytest.mark.parametrize("name", sorted(UNAUTHENTICATED | set(SECRETS)))
def test_a_service_refuses_to_start_off_loopback(name: str, tmp_path: Path,
                                                 no_overrides: None) -> None:
    settings = _off_loopback(tmp_path)
    service = next(s for s in all_services(settings) if s.name == name)
    assert service.prepare is not None, f"{name} has no start-up check"
    with pytest.raises(ConfigError) as refused:
        service.prepare()
    message = str(refused.value)
    expected = SECRETS.get(name, ["ETAR_ALLOW_UNAUTHENTICATED_BIND"])
    assert all(variable in message for variable in expected), message
    assert "0.0.0.0" in message
    # Refused before anything was installed, written or initialised.
    assert not settings.state_dir.exists() or not any(settings.state_dir.rglob("*"))


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_an_empty_secret_is_refused_too(name: str, tmp_path: Path, no_overrides: None) -> None:
    blank = {variable.removeprefix("ETAR_").lower(): SecretStr("")
             for variable in SECRETS[name]}
    service = next(s for s in all_services(_off_loopback(tmp_path, **blank)) if s.name == name)
    assert service.prepare is not None
    with pytest.raises(ConfigError, match="empty"):
        service.prepare()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "existing-0755"])
def test_stack_up_off_loopback_fails_with_one_clear_line(tmp_path: Path, existing: bool) -> None:
    """``etar stack up`` of JupyterLab on 0.0.0.0 with its published token: exits non-zero
    within seconds naming the setting, nothing listens, and the state folder is 0700."""
    state = tmp_path / ".etar"
    if existing:
        state.mkdir(mode=0o755)
        state.chmod(0o755)
        (state / "notes.txt").write_text("kept")
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("ETAR_")}
    env.update(ETAR_PROJECT_DIR=str(Path.cwd()), ETAR_STATE_DIR=str(state),
               ETAR_BIND_HOST="0.0.0.0", ETAR_STACK_SERVICES="jupyter",
               ETAR_JUPYTER_PORT=str(port))
    process = subprocess.Popen([sys.executable, "-m", "etar", "stack", "up", "--quiet"],
                               env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        # The hole: it started. Stop it the supervisor's way (services run in their own
        # process groups), then `etar stack down` for anything left.
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate(timeout=10)
        subprocess.run([sys.executable, "-m", "etar", "stack", "down"], env=env, cwd=tmp_path,
                       capture_output=True, timeout=120, check=False)
        pytest.fail(f"the stack started JupyterLab on 0.0.0.0 with the default token:\n"
                    f"{output[-2000:]}")
    assert process.returncode != 0, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ETAR_JUPYTER_TOKEN" in errors[0], output
    assert "Traceback" not in output
    assert not _listening(port)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    if existing:
        assert (state / "notes.txt").read_text() == "kept"


@pytest.mark.integration
def test_the_running_stacks_state_folder_is_private(stack_settings: Settings) -> None:
    assert stat.S_IMODE(stack_settings.state_dir.stat().st_mode) == 0o700
