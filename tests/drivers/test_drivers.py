"""The official ClickHouse drivers against the native stack's endpoint, as their users run them.

clickhouse-jdbc 0.10.0 with its default settings (native LZ4 responses, RowBinary formats
asked in headers, the metadata an IDE reads first) and clickhouse-go v2.51.0 over HTTP with
and without block compression (``client_protocol_version``-shaped Native). The check
programs live beside this file and are built once by ``etar stack install``
(``etar_stack.clickhouse_http.drivers``); they skip only where Java or Go is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest

from etar.config import Settings
from etar.warehouse import table as warehouse
from etar_stack.clickhouse_http import drivers

pytestmark = pytest.mark.integration
RUN_TIMEOUT = 180


def _run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return done.stdout


def _credentials(settings: Settings) -> tuple[str, str]:
    return settings.clickhouse_user, settings.clickhouse_password.get_secret_value()


@pytest.mark.skipif(shutil.which("java") is None or shutil.which("javac") is None,
                    reason="no JDK on this machine")
def test_jdbc_driver_with_default_settings(stack_settings: Settings) -> None:
    classpath = drivers.jdbc(stack_settings)
    user, password = _credentials(stack_settings)
    url = (f"jdbc:clickhouse://{stack_settings.clickhouse_host}:"
           f"{stack_settings.clickhouse_port}/default")
    table = f"jdbc_{uuid.uuid4().hex[:10]}"
    out = _run(["java", "-cp", classpath, "JdbcCheck", url, user, password, table])
    for step in ("SELECT version()", "timestamp parameter", "getTables", "getColumns",
                 "batch insert of 1000 rows", "1000 rows read back",
                 "server error surfaced with code 60"):
        assert step in out, out
    assert not warehouse.client(stack_settings).command(f"EXISTS TABLE {table}")


@pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain on this machine")
@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_go_driver_over_http(stack_settings: Settings, compression: str) -> None:
    binary = drivers.go(stack_settings)
    user, password = _credentials(stack_settings)
    table = f"go_{compression}_{uuid.uuid4().hex[:10]}"
    out = _run([str(binary), "-addr",
                f"{stack_settings.clickhouse_host}:{stack_settings.clickhouse_port}",
                "-user", user, "-password", password, "-compression", compression,
                "-table", table])
    assert "ok: ping" in out and "ok: group by" in out, out
    assert "ok: batch of 1000 rows read back" in out, out
    assert not warehouse.client(stack_settings).command(f"EXISTS TABLE {table}")
