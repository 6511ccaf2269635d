"""`make compose-check`: the compose stack end to end on a Docker host, in one line.

Starts `docker compose up -d --build`, waits (bounded) until every service is healthy and every
one-shot service has exited 0, produces a known number of events inside one minute, waits for
that minute's report, and checks produced = ClickHouse (FINAL) = report. Prints one line;
exits 0 when they agree, 1 when they do not, a wait runs out or ClickHouse or the dashboard API
does not answer (the line names which, and why), 2 when no Docker engine is reachable.
Standard library only (runs with any python3). The stack is left running (`docker compose
down` stops it; `down -v` also drops its volumes).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
UP_TIMEOUT_S = 1200.0  # first run: builds three images and pulls the rest
REPORT_TIMEOUT_S = 300.0  # after the minute's end: lateness, the sensor, Spark, the POST
UNREACHABLE_S = 60.0  # the dashboard API, healthy before, not answering this long: it is down
POLL_S = 5.0
EVENTS, RATE = 600, 100.0  # 6 s of events, inside one minute
DASHBOARD = "http://127.0.0.1:8000"
UTC = timezone(timedelta(0))  # not datetime.UTC: any python3 runs this script, 3.10 has none


class CheckFailed(Exception):
    """The check cannot go on; the message says why."""


class NoDocker(Exception):
    """No Docker engine (or compose plugin) to run the stack on."""


def _env_files() -> list[Path]:
    """.env.example, then .env when there is one (its values win, as in compose)."""
    files = [ROOT / ".env.example", ROOT / ".env"]
    return [path for path in files if path.exists()]


def _settings() -> dict[str, str]:
    settings: dict[str, str] = {}
    for path in _env_files():
        pairs = (line.split("=", 1) for line in path.read_text().splitlines()
                 if "=" in line and not line.lstrip().startswith("#"))
        settings.update({key.strip(): value.strip() for key, value in pairs})
    return settings


def _compose(*args: str, timeout: float = 120, check: bool = True
             ) -> subprocess.CompletedProcess[str]:
    env_files = [arg for path in _env_files() for arg in ("--env-file", str(path))]
    command = ["docker", "compose", *env_files, *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            check=False)
    if check and result.returncode != 0:
        raise CheckFailed(f"`docker compose {' '.join(args)}` failed: "
                          f"{(result.stderr or result.stdout).strip()[-800:]}")
    return result


def require_docker() -> None:
    """Fail fast, with what to do, when there is no Docker engine or compose plugin."""
    if shutil.which("docker") is None:
        raise NoDocker("no `docker` command on PATH: install Docker Engine "
                         "with the compose plugin (the native stack needs none: `make up`)")
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        info = subprocess.CompletedProcess([], 1, "", "`docker info` did not answer in 30 s")
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no answer"])[-1]
        raise NoDocker(f"no Docker engine is reachable ({reason}); start "
                         "Docker and retry (the native stack needs none: `make up`)")
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True,
                            timeout=30, check=False)
    if plugin.returncode != 0:
        raise NoDocker("`docker compose` is missing: install the Docker "
                         "Compose plugin (v2)")


def _containers() -> list[dict[str, Any]]:
    out = _compose("ps", "--all", "--format", "json").stdout.strip()
    if out.startswith("["):
        loaded: list[dict[str, Any]] = json.loads(out)
        return loaded
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_healthy(timeout: float = UP_TIMEOUT_S) -> None:
    """Every long-running service healthy (or running, without a healthcheck), every one-shot
    exited 0; a one-shot that exits non-zero fails at once."""
    deadline = time.monotonic() + timeout
    waiting: list[str] = []
    while time.monotonic() < deadline:
        waiting = []
        for container in _containers():
            name, state = container["Service"], container["State"]
            health = container.get("Health", "")
            if state == "exited":
                if int(container.get("ExitCode", 1)) != 0:
                    logs = _compose("logs", "--tail", "20", name, check=False).stdout
                    raise CheckFailed(f"{name} exited {container.get('ExitCode')}: {logs}")
            elif state != "running" or health not in ("", "healthy"):
                waiting.append(f"{name} ({health or state})")
        if not waiting:
            return
        time.sleep(5)
    raise CheckFailed(f"not healthy after {timeout:.0f} s: {', '.join(waiting)}")


def produce_one_minute() -> datetime:
    """EVENTS events, all inside one minute (started early in it); returns that minute."""
    now = datetime.now(UTC)
    if now.second > 40:
        time.sleep(61 - now.second)
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    _compose("--profile", "producer", "run", "--rm", "producer", "etar", "produce",
             "--count", str(EVENTS), "--rate", str(RATE), "--processes", "1", timeout=300)
    if datetime.now(UTC) >= minute + timedelta(minutes=1):
        raise CheckFailed("producing took past the minute's end; run the check again")
    return minute


def _reason(exc: OSError) -> str:
    """What an endpoint's failure says, on one line: the HTTP status and body, or the cause."""
    if isinstance(exc, urllib.error.HTTPError):
        body = exc.read().decode(errors="replace").strip().splitlines()
        return f"HTTP {exc.code}: {body[0][:300] if body else exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _get(url: str, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def wait_report(minute: datetime, timeout: float | None = None) -> dict[str, Any]:
    """The dashboard's report of ``minute``, once the DAG has posted it (at most ``timeout``,
    default REPORT_TIMEOUT_S, after the minute's end). An API that stops answering for
    UNREACHABLE_S fails the wait at once, naming why."""
    timeout = REPORT_TIMEOUT_S if timeout is None else timeout
    deadline = minute + timedelta(minutes=1, seconds=timeout)
    stamp = minute.strftime("%Y-%m-%dT%H:%M")
    url = f"{DASHBOARD}/reports"
    failing_since: float | None = None
    error = ""
    while datetime.now(UTC) < deadline:
        try:
            reports = _get(url) or []
        except (OSError, ValueError) as exc:  # refused, timed out, an HTTP error, not JSON
            error = _reason(exc) if isinstance(exc, OSError) else f"not JSON ({exc})"
            failing_since = time.monotonic() if failing_since is None else failing_since
            if time.monotonic() - failing_since >= UNREACHABLE_S:
                raise CheckFailed(f"the dashboard API at {DASHBOARD} did not answer for "
                                  f"{UNREACHABLE_S:.0f} s ({error})") from None
        else:
            failing_since = None
            for report in reports:
                if str(report.get("minute", "")).startswith(stamp):
                    found: dict[str, Any] = report
                    return found
        time.sleep(POLL_S)
    last = f"; its last answer: {error}" if failing_since is not None else ""
    raise CheckFailed(f"no report for {stamp} within {timeout:.0f} s of the minute's end "
                      f"(see `docker compose logs airflow-worker`){last}")


def clickhouse_count(minute: datetime, settings: dict[str, str]) -> int:
    """Rows of ``minute`` in the table, FINAL (what the report must equal)."""
    table = f"`{settings['ETAR_CLICKHOUSE_DATABASE']}`.`{settings['ETAR_CLICKHOUSE_TABLE']}`"
    query = (f"SELECT count() FROM {table} FINAL WHERE event_minute = "
             f"toDateTime('{minute:%Y-%m-%d %H:%M:%S}', 'UTC')")
    auth = base64.b64encode(f"{settings['ETAR_CLICKHOUSE_USER']}:"
                            f"{settings['ETAR_CLICKHOUSE_PASSWORD']}".encode()).decode()
    endpoint = f"http://127.0.0.1:{settings['ETAR_CLICKHOUSE_PORT']}"
    url = f"{endpoint}/?" + urllib.parse.urlencode({"query": query})
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = response.read().decode(errors="replace").strip()
    except OSError as exc:  # refused, timed out, or an HTTP error (wrong password, no table)
        raise CheckFailed(f"ClickHouse at {endpoint} did not count the minute's rows "
                          f"({_reason(exc)})") from None
    try:
        return int(answer)
    except ValueError:
        raise CheckFailed(f"ClickHouse at {endpoint} answered {answer[:200]!r} to the "
                          "count, not a number") from None


def main() -> int:
    try:
        require_docker()
    except NoDocker as exc:
        print(f"compose-check: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    settings = _settings()
    try:
        _compose("up", "-d", "--build", timeout=UP_TIMEOUT_S)
        wait_healthy()
        up_s = time.monotonic() - started
        minute = produce_one_minute()
        report = wait_report(minute)
        stored = clickhouse_count(minute, settings)
    except (CheckFailed, OSError, subprocess.TimeoutExpired) as exc:
        print("compose-check: FAILED: " + " | ".join(str(exc).split("\n")))
        return 1
    reported = int(report.get("total_events", -1))
    verdict = "ok" if EVENTS == stored == reported else "MISMATCH"
    print(f"compose-check: {verdict}: minute {minute:%Y-%m-%dT%H:%MZ}: produced {EVENTS}, "
          f"ClickHouse {stored}, report {reported} (stack healthy after {up_s:.0f} s)")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
