"""The native stack: every service etar needs, installed from package registries and run here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from etar.config import Settings
from etar.errors import ConfigError
from etar_stack import s3a_jars
from etar_stack.supervisor import Service, Stack


def all_services(settings: Settings) -> list[Service]:
    """The services in dependency order."""
    # Imported here: as globals, `registry` and `clickhouse` would be shadowed by the server
    # packages of the same names once those are imported.
    from etar.analysis.mode import on_connect
    from etar_stack.services import (
        airflow,
        clickhouse,
        dashboard,
        jupyter,
        kafka,
        postgres,
        redis,
        registry,
        s3,
        sink,
        spark_cluster,
        spark_connect,
    )

    return [*kafka.services(settings), registry.service(settings), clickhouse.service(settings),
            *sink.services(settings), s3.service(settings), *dashboard.services(settings),
            *spark_cluster.services(settings),
            *([spark_connect.service(settings)] if on_connect(settings) else []),
            postgres.service(settings), redis.service(settings), *airflow.services(settings),
            jupyter.service(settings)]


def install(settings: Settings) -> None:
    """Fetch every service's binaries (idempotent; nothing is downloaded when a service starts)."""
    from etar_stack.services import clickhouse, kafka, s3

    kafka.install(settings)
    s3.install(settings)
    s3a_jars.install(settings)
    clickhouse.install(settings)


def selected_services(settings: Settings) -> list[Service]:
    """``all_services``, or the ones ``stack_services`` names (a developer's partial stack).

    A name also selects the members of a cluster (``kafka``: ``kafka-1``, ``kafka-2`` …)."""
    services = all_services(settings)
    wanted = {name.strip() for name in settings.stack_services.split(",") if name.strip()}
    known = {service.name for service in services} | {_group(s.name) for s in services}
    unknown = wanted - known
    if unknown:
        raise ConfigError(f"ETAR_STACK_SERVICES names unknown services {sorted(unknown)}; "
                          f"known: {', '.join(service.name for service in services)}")
    return [service for service in services
            if not wanted or service.name in wanted or _group(service.name) in wanted]


def _group(name: str) -> str:
    """``kafka-2`` → ``kafka``: the engine a cluster member belongs to."""
    base, _, number = name.rpartition("-")
    return base if base and number.isdigit() else name


def stack(settings: Settings) -> Stack:
    """The native stack for ``settings``."""
    return Stack(settings, selected_services(settings))


@contextmanager
def running(settings: Settings) -> Iterator[Stack]:
    """The native stack: reused when every service is up, else started here and stopped after."""
    native = stack(settings)
    # A running stack is reused even when it was started by older code that lacks a newer
    # service (e.g. jupyter); a second one could not start anyway: its ports are taken.
    started = native.read_state() is None and not native.is_up()
    if started:
        native.up_detached()
    try:
        yield native
    finally:
        if started:
            native.down()
