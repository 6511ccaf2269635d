"""The ClickHouse service: chdb on the HTTP interface (``python -m etar.native.clickhouse``)."""

from __future__ import annotations

import sys

import httpx

from etar.config import Settings
from etar.native.supervisor import Service


def url(settings: Settings) -> str:
    return f"http://{settings.clickhouse_host}:{settings.clickhouse_port}"


def ready(settings: Settings) -> bool:
    """The endpoint answers ``/ping``."""
    return httpx.get(f"{url(settings)}/ping", timeout=2).text == "Ok.\n"


def install(settings: Settings) -> None:
    """Build the JDBC and Go driver checks ahead, so their tests download nothing."""
    from etar.native.clickhouse import drivers

    drivers.install(settings)


def service(settings: Settings) -> Service:
    """The endpoint as a supervised service; the table is applied once it is ready."""
    from etar import warehouse

    return Service(
        name="clickhouse",
        command=[sys.executable, "-m", "etar.native.clickhouse"],
        port=settings.clickhouse_port,
        url=url(settings),
        ready=lambda: ready(settings),
        after_start=lambda: warehouse.apply_schema(settings=settings),
        env={"TZ": "UTC"},
        start_timeout=120,
    )
