"""Without a Spark Connect server the analysis fails at once (a client would retry for minutes)."""

from __future__ import annotations

import socket
import time

import pytest

from etar.analysis.remote import analyze_minute
from etar.config import Settings
from etar.errors import ServiceUnavailable
from etar.minute import Minute
from etar_stack.services import spark_connect as service


def test_no_server_fails_fast_with_the_fix() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nobody listens there
    settings = Settings(_env_file=None, spark_connect_url=f"sc://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="not listening"):
        analyze_minute(Minute.parse("2026-01-01T10:30"), settings)
    assert not service.ready(settings)
    assert time.monotonic() - started < 10
