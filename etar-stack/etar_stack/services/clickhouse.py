"""The ClickHouse service: chdb on the HTTP interface (``python -m etar_stack.clickhouse_http``)."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

import httpx

from etar.config import Settings
from etar.security import require_secrets
from etar_stack.supervisor import Service


def url(settings: Settings) -> str:
    return f"http://{settings.clickhouse_host}:{settings.clickhouse_port}"


def ready(settings: Settings) -> bool:
    """The endpoint answers ``/ping``."""
    return httpx.get(f"{url(settings)}/ping", timeout=2).text == "Ok.\n"


def install(settings: Settings) -> None:
    """Build the JDBC and Go driver checks ahead, so their tests download nothing."""
    from etar_stack.clickhouse_http import drivers

    drivers.install(settings)


def allow_hosts(settings: Settings) -> str:
    """The allow-list the endpoint gets: the configured hosts and the stack's own S3."""
    s3 = urlsplit(settings.s3_endpoint)
    own = f"{s3.hostname}:{s3.port or (443 if s3.scheme == 'https' else 80)}"
    hosts = [h.strip() for h in settings.clickhouse_remote_url_allow_hosts.split(",") if h.strip()]
    return ",".join(dict.fromkeys([*hosts, own]))


def service(settings: Settings) -> Service:
    """The endpoint as a supervised service; the table is applied once it is ready."""
    from etar.warehouse import table as warehouse

    return Service(
        name="clickhouse",
        command=[sys.executable, "-m", "etar_stack.clickhouse_http"],
        port=settings.clickhouse_port,
        url=url(settings),
        ready=lambda: ready(settings),
        # the endpoint refuses these too; checked here, `etar stack up` stops at once, in one line
        prepare=lambda: require_secrets(settings, settings.bind_host, "clickhouse_password",
                                        "clickhouse_reader_password"),
        after_start=lambda: warehouse.apply_schema(settings=settings),
        env={"TZ": "UTC", "ETAR_CLICKHOUSE_REMOTE_URL_ALLOW_HOSTS": allow_hosts(settings)},
        start_timeout=120,
    )
