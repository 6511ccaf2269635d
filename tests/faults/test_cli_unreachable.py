"""The CLI against services that are not there: one clear line and a non-zero exit within
seconds, never a traceback or a hang."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BOUND_S = 45.0
"""Generous under a loaded CI machine: start-up and imports take several seconds of it."""


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose every service address is a closed port."""
    port = _closed_port()
    home = tmp_path_factory.mktemp("offline")
    keep = {k: v for k, v in os.environ.items() if not k.startswith("ETAR_")}
    return {**keep, "ETAR_PROJECT_DIR": str(home), "ETAR_STATE_DIR": str(home / ".etar"),
            "ETAR_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "ETAR_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{port}",
            "ETAR_CLICKHOUSE_PORT": str(port), "ETAR_S3_ENDPOINT": f"http://127.0.0.1:{port}",
            "ETAR_DASHBOARD_API_URL": f"http://127.0.0.1:{port}",
            "ETAR_SPARK_CONNECT_URL": f"sc://127.0.0.1:{port}",
            "ETAR_AIRFLOW_API_URL": f"http://127.0.0.1:{port}"}


MINUTE = "2026-01-01T10:30"


@pytest.mark.parametrize(("command", "names"), [
    (["produce", "--count", "5"], "Kafka"),
    (["extract", "--minute", MINUTE], "ClickHouse"),
    (["analyze", "--minute", MINUTE], "Spark Connect"),
    (["report", "--minute", MINUTE], "S3"),
    (["run-minute", "--minute", MINUTE], "ClickHouse"),
    (["partitions"], "ClickHouse"),
    (["audit"], "ClickHouse"),
], ids=lambda value: value[0] if isinstance(value, list) else "")
def test_an_unreachable_service_is_one_clear_line(offline: dict[str, str], command: list[str],
                                                  names: str, tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "etar", *command], env=offline,
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            check=False)
    elapsed = time.monotonic() - started
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0
    assert elapsed < BOUND_S, f"{command[0]} took {elapsed:.0f}s"
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1, result.stderr[-2000:]
    assert names in errors[0] and "127.0.0.1:" in errors[0], errors[0]


def test_a_client_library_error_is_described_in_one_line() -> None:
    """Exceptions etar does not raise itself name the service or input, on one line."""
    import json

    from etar.orchestration.failures import describe

    assert describe(ValueError("boom\nmore")) == ("unexpected ValueError: boom (set ETAR_DEBUG=1 "
                                                   "for the traceback)")
    with pytest.raises(json.JSONDecodeError) as bad:
        json.loads("{not json")
    assert describe(bad.value).startswith("a document is not valid JSON")
