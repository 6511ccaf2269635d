"""Fixtures of the native stack's unit tests."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from etar_stack.clickhouse_http.engine import Engine


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    """chdb in this process (one engine per process: the test session shares it)."""
    with tempfile.TemporaryDirectory(prefix="etar-chdb-") as folder:
        opened = Engine(str(Path(folder) / "data"))
        try:
            yield opened
        finally:
            opened.close()
