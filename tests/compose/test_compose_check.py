"""tools/compose_check.py (`make compose-check`) without Docker.

Its waiting logic, against a stand-in `docker` that answers `compose ps` as Compose v2 does
(JSON lines or, before 2.21, one array): what it accepts as up, what fails. Then everything
after the health wait (the minute, ClickHouse's FINAL count, the report, the verdict and exit
code) against real HTTP endpoints: see the second part."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import uvicorn

from dashboard.api import create_app
from etar.config import Settings
from tests import REPO_ROOT


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_check",
                                                  REPO_ROOT / "tools" / "compose_check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, containers: list[dict[str, object]],
            array: bool = False) -> None:
    lines = [json.dumps(containers)] if array else [json.dumps(c) for c in containers]
    out = tmp_path / "ps.json"
    out.write_text("\n".join(lines) + "\n")
    script = tmp_path / "docker"
    script.write_text(f'#!/bin/sh\ncase "$*" in *" ps "*) cat {out};; *) echo "log line";; esac\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")


UP = [{"Service": "broker", "State": "running", "Health": "healthy", "ExitCode": 0},
      {"Service": "kafka-init", "State": "exited", "Health": "", "ExitCode": 0},
      {"Service": "jupyter", "State": "running", "Health": "", "ExitCode": 0}]


@pytest.mark.parametrize("array", [False, True])
def test_healthy_running_and_one_shots_that_exited_0_are_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, array: bool) -> None:
    check = _load()
    _docker(tmp_path, monkeypatch, UP, array)
    check.wait_healthy(timeout=5)


def test_a_failed_one_shot_fails_at_once_and_an_unhealthy_service_times_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check = _load()
    _docker(tmp_path, monkeypatch, [*UP, {"Service": "s3-init", "State": "exited",
                                          "Health": "", "ExitCode": 1}])
    with pytest.raises(check.CheckFailed, match="s3-init exited 1"):
        check.wait_healthy(timeout=60)
    _docker(tmp_path, monkeypatch, [*UP, {"Service": "connect", "State": "running",
                                          "Health": "starting", "ExitCode": 0}])
    with pytest.raises(check.CheckFailed, match=r"connect \(starting\)"):
        check.wait_healthy(timeout=0.1)


# --- past the health wait: the minute, ClickHouse, the report, the verdict -----------------
# The stand-in `docker` answers every command compose_check runs; its `run producer` runs
# stand_in_pipeline.py, which stands in for Kafka, Connect, Airflow and Spark (they need
# Docker or the native stack) and writes the minute into what compose_check then reads over
# HTTP, the real thing here: the native stack's ClickHouse endpoint (chdb, in a process of its
# own) and the dashboard API (dashboard.api, served in this process).

PIPELINE = Path(__file__).with_name("stand_in_pipeline.py")
USER, PASSWORD, DATABASE = "default", "compose-check", "etar_compose_check"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The ClickHouse HTTP endpoint the native stack runs (chdb), alone, on a free port."""
    state, port = tmp_path_factory.mktemp("chdb"), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETAR_")}
    env.update({"ETAR_STATE_DIR": str(state), "ETAR_BIND_HOST": "127.0.0.1",
                "ETAR_CLICKHOUSE_PORT": str(port), "ETAR_CLICKHOUSE_USER": USER,
                "ETAR_CLICKHOUSE_PASSWORD": PASSWORD})
    with (state / "server.log").open("wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "etar_stack.clickhouse_http"],
                                  cwd=state, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/ping"):
            assert server.poll() is None, (state / "server.log").read_text()
            assert time.monotonic() < deadline, "the ClickHouse endpoint did not start in 60 s"
            time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def dashboard() -> Iterator[str]:
    """The dashboard API (reports in memory, no bucket reload) on a free port."""
    port = _free_port()
    settings = Settings(_env_file=None, bind_host="127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _docker_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, check: ModuleType,
                 env: dict[str, str], scenario: dict[str, Any], dashboard: str) -> Path:
    """A checkout (.env.example + ``env`` as its .env) and a stand-in Docker engine whose
    stack is up and whose producer runs the stand-in pipeline; the log of docker's calls."""
    root, bin_dir = tmp_path / "checkout", tmp_path / "bin"
    root.mkdir(parents=True)
    bin_dir.mkdir()
    shutil.copy(REPO_ROOT / ".env.example", root / ".env.example")
    (root / ".env").write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    ps, calls = tmp_path / "ps.json", tmp_path / "docker-calls"
    ps.write_text("\n".join(json.dumps(c) for c in UP) + "\n")
    script = bin_dir / "docker"
    script.write_text(f"""#!/bin/sh
echo "$*" >> {calls}
case "$*" in
  "info "*) echo 27.3.1;;
  "compose version") echo "Docker Compose version v2.29.7";;
  *" ps "*) cat {ps};;
  *" up -d --build") ;;
  *" run --rm producer "*) exec {sys.executable} {PIPELINE} "$@";;
  *) echo "stand-in docker: unexpected $*" >&2; exit 3;;
esac
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    scenario["settings"] = {
        "clickhouse_port": int(env.get("ETAR_CLICKHOUSE_PORT", 8123)),
        "clickhouse_user": USER, "clickhouse_password": PASSWORD,
        "clickhouse_database": DATABASE, "clickhouse_table": env["ETAR_CLICKHOUSE_TABLE"],
        "dashboard_api_url": dashboard}
    monkeypatch.setenv("STAND_IN_PIPELINE", json.dumps(scenario))
    monkeypatch.setattr(check, "ROOT", root)
    monkeypatch.setattr(check, "DASHBOARD", dashboard)
    return calls


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return out[0]


def _env(port: int, table: str, password: str = PASSWORD) -> dict[str, str]:
    return {"ETAR_CLICKHOUSE_PORT": str(port), "ETAR_CLICKHOUSE_USER": USER,
            "ETAR_CLICKHOUSE_PASSWORD": password, "ETAR_CLICKHOUSE_DATABASE": DATABASE,
            "ETAR_CLICKHOUSE_TABLE": table}


def test_a_minute_that_agrees_everywhere_is_one_ok_line_and_exit_0(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        clickhouse: int, dashboard: str) -> None:
    check = _load()
    calls = _docker_host(tmp_path, monkeypatch, check, _env(clickhouse, "agree"),
                         {"stored": 600, "duplicates": 40, "neighbour": 25,
                          "reported": 600}, dashboard)
    assert check.main() == 0
    line = _one_line(capsys)
    assert re.fullmatch(r"compose-check: ok: minute \d{4}-\d\d-\d\dT\d\d:\d\dZ: produced 600, "
                        r"ClickHouse 600, report 600 \(stack healthy after \d+ s\)", line), line
    produce = next(c for c in calls.read_text().splitlines() if " run --rm producer " in c)
    assert produce.endswith("--profile producer run --rm producer etar produce --count 600 "
                            "--rate 100.0 --processes 1"), produce
    assert "--env-file" in produce  # .env.example, then the checkout's .env


@pytest.mark.parametrize(("stored", "reported"), [(600, 590), (597, 600)])
def test_a_mismatch_is_one_line_naming_the_counts_and_exit_1(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        clickhouse: int, dashboard: str, stored: int, reported: int) -> None:
    check = _load()
    _docker_host(tmp_path, monkeypatch, check, _env(clickhouse, f"mismatch_{stored}"),
                 {"stored": stored, "duplicates": 10, "reported": reported}, dashboard)
    assert check.main() == 1
    line = _one_line(capsys)
    assert line.startswith("compose-check: MISMATCH: minute "), line
    assert f"produced 600, ClickHouse {stored}, report {reported} " in line, line


def test_an_unreachable_or_refusing_endpoint_is_one_clear_line_and_exit_1(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        clickhouse: int, dashboard: str) -> None:
    check = _load()
    closed = _free_port()  # nothing listens there
    _docker_host(tmp_path / "ch", monkeypatch, check, _env(closed, "unreachable"),
                 {"stored": None, "reported": 600}, dashboard)
    assert check.main() == 1
    line = _one_line(capsys)
    assert line.startswith(f"compose-check: FAILED: ClickHouse at http://127.0.0.1:{closed} "
                           "did not count the minute's rows ("), line
    assert "refused" in line, line

    _docker_host(tmp_path / "auth", monkeypatch, check,
                 _env(clickhouse, "refused", password="not-the-password"),
                 {"stored": None, "reported": 600}, dashboard)
    assert check.main() == 1
    line = _one_line(capsys)
    assert line.startswith(f"compose-check: FAILED: ClickHouse at http://127.0.0.1:{clickhouse}"
                           " did not count the minute's rows (HTTP "), line

    monkeypatch.setattr(check, "UNREACHABLE_S", 1.0)
    monkeypatch.setattr(check, "POLL_S", 0.2)
    _docker_host(tmp_path / "api", monkeypatch, check, _env(clickhouse, "no_api"),
                 {"stored": 600, "reported": None}, f"http://127.0.0.1:{closed}")
    started = time.monotonic()
    assert check.main() == 1
    assert time.monotonic() - started < 30
    line = _one_line(capsys)
    assert line.startswith(f"compose-check: FAILED: the dashboard API at http://127.0.0.1:"
                           f"{closed} did not answer for 1 s ("), line
    assert "refused" in line, line
