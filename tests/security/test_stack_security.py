"""The native stack's exposure: loopback-only sockets, no secret in command lines or logs, no
default credentials off loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from etar.config import Settings
from etar_stack import stack
from tests.security.sockets import command_line, descendants, listeners

pytestmark = pytest.mark.integration

SHORT = 12
"""Secrets shorter than this (e.g. a password "etar") are common words: they are looked for
in credential-shaped contexts only, not as bare substrings."""


def _service_pids(settings: Settings) -> dict[str, int]:
    state = stack(settings).read_state()
    assert state is not None, "the stack's supervisor is not running"
    pids: dict[str, int] = state["services"]
    assert pids, state
    return pids


def _secrets(settings: Settings) -> dict[str, str]:
    return {name: value.get_secret_value() for name, value in settings
            if isinstance(value, SecretStr) and value.get_secret_value()}


def _leaks(text: str, secret: str) -> bool:
    if len(secret) >= SHORT:
        return secret in text
    shapes = (f":{secret}@", f"password={secret}", f"password {secret}", f'password": "{secret}"',
              f"password '{secret}'", f"--password={secret}", f"token={secret}")
    return any(shape in text for shape in shapes)


def test_every_service_listens_on_loopback_only(stack_settings: Settings) -> None:
    found = []
    for name, pid in _service_pids(stack_settings).items():
        for listener in listeners(descendants([pid])):
            found.append((name, listener))
    assert {name for name, _ in found} >= {"kafka", "clickhouse", "dashboard-api", "s3"}
    exposed = [f"{name}: {item.name} (pid {item.pid}) on {item.address}:{item.port}"
               for name, item in found if not item.loopback]
    assert not exposed, exposed


def test_no_secret_in_any_command_line(stack_settings: Settings) -> None:
    secrets = _secrets(stack_settings)
    pids = descendants(list(_service_pids(stack_settings).values()))
    leaks = [f"{name} in pid {pid}: {command_line(pid)[:120]}" for pid in sorted(pids)
             for name, secret in secrets.items() if _leaks(command_line(pid), secret)]
    assert not leaks, leaks


def test_no_secret_in_the_logs(stack_settings: Settings) -> None:
    secrets = _secrets(stack_settings)
    logs = sorted((stack_settings.state_dir / "logs").glob("*.log"))
    assert logs
    leaks = [f"{name} in {path.name}" for path in logs
             for name, secret in secrets.items()
             if _leaks(path.read_text(errors="replace"), secret)]
    assert not leaks, leaks


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(module: list[str], env: dict[str, str], tmp_path: Path,
           within: float = 60) -> tuple[int | None, str]:
    """Start a server with ``env``; (exit code, output) if it exits within ``within`` seconds,
    else (None, output) after stopping it."""
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, *module], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        process.wait(within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        return None, log.read_text()
    return process.returncode, log.read_text()


def _off_loopback_env(tmp_path: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith("ETAR_") or k in ("ETAR_PROJECT_DIR",)}
    port = str(_free_port())
    return {**keep, "ETAR_STATE_DIR": str(tmp_path / ".etar"), "ETAR_BIND_HOST": "0.0.0.0",
            "ETAR_CLICKHOUSE_PORT": port, "ETAR_DASHBOARD_API_URL": f"http://127.0.0.1:{port}"}


@pytest.mark.parametrize("token", [None, ""], ids=["default", "empty"])
def test_the_dashboard_api_refuses_the_default_or_an_empty_token_off_loopback(
        tmp_path: Path, token: str | None) -> None:
    """Served by uvicorn as compose does: one ``error:`` line naming the token (before, an
    empty token was served and a traceback ended the default one)."""
    env = _off_loopback_env(tmp_path)
    if token is not None:
        env["ETAR_DASHBOARD_TOKEN"] = token
    port = env["ETAR_CLICKHOUSE_PORT"]
    code, output = _serve(["-m", "uvicorn", "--app-dir", str(Path.cwd()), "dashboard.api:app",
                           "--host", "0.0.0.0", "--port", port], env, tmp_path, within=30)
    assert code == 1, output[-2000:]
    assert "ETAR_DASHBOARD_TOKEN" in _one_error_line(output)


def test_the_clickhouse_endpoint_refuses_the_default_password_off_loopback(
        tmp_path: Path) -> None:
    started = time.monotonic()
    code, output = _serve(["-m", "etar_stack.clickhouse_http"], _off_loopback_env(tmp_path),
                          tmp_path, within=30)
    assert code == 1, output[-2000:]
    assert "ETAR_CLICKHOUSE_PASSWORD" in _one_error_line(output)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("empty", ["ETAR_CLICKHOUSE_PASSWORD", "ETAR_CLICKHOUSE_READER_PASSWORD"])
def test_the_clickhouse_endpoint_refuses_an_empty_password_off_loopback(
        tmp_path: Path, empty: str) -> None:
    """An empty password lets in anyone who names its user (a request without credentials is
    the writer, ``default``): off loopback it is refused like the published one. Before, the
    endpoint served 0.0.0.0 with it."""
    env = {**_off_loopback_env(tmp_path),
           "ETAR_CLICKHOUSE_PASSWORD": "a-writer-secret-of-its-own",
           "ETAR_CLICKHOUSE_READER_PASSWORD": "a-reader-secret-of-its-own", empty: ""}
    code, output = _serve(["-m", "etar_stack.clickhouse_http"], env, tmp_path, within=30)
    assert code == 1, f"the endpoint served 0.0.0.0 with an empty {empty}:\n{output[-2000:]}"
    line = _one_error_line(output)
    assert f"empty {empty}:" in line and "0.0.0.0" in line, line


def _one_error_line(output: str) -> str:
    """The refusal: exactly one ``error:`` line and no traceback."""
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output[-2000:]
    return errors[0]
