"""The native stack: every service etar needs, installed from package registries and run here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from etar.config import Settings
from etar.native import clickhouse, dashboard, kafka, registry, s3, sink, spark
from etar.native.services import airflow, postgres, redis
from etar.native.supervisor import Service, Stack


def services(settings: Settings) -> list[Service]:
    """The services in dependency order."""
    return [kafka.service(settings), registry.service(settings), clickhouse.service(settings),
            sink.service(settings), s3.service(settings), *dashboard.services(settings),
            postgres.service(settings), redis.service(settings), *airflow.services(settings)]


def install(settings: Settings) -> None:
    """Fetch every service's binaries (idempotent; nothing is downloaded when a service starts)."""
    kafka.install(settings)
    s3.install(settings)
    spark.install(settings)


def stack(settings: Settings) -> Stack:
    """The native stack for ``settings``."""
    return Stack(settings, services(settings))


@contextmanager
def running(settings: Settings) -> Iterator[Stack]:
    """The native stack: reused when every service is up, else started here and stopped after."""
    native = stack(settings)
    started = not native.is_up()
    if started:
        native.up_detached()
    try:
        yield native
    finally:
        if started:
            native.down()
