"""The Kafka → ClickHouse sink as a native-stack service (``python -m etar.sink.consumer``).

On the cluster topology several instances share the consumer group (``sink-1``, ``sink-2``):
each names itself (``ETAR_SINK_INSTANCE``, the consumer's ``client.id``) and reports its own
progress file; the offsets and insert plans they hand each other live in the group's commits.
"""

from __future__ import annotations

import sys

from confluent_kafka import ConsumerGroupState

from etar.config import SINK_CLUSTER_INSTANCES, Settings
from etar.sink.consumer import read_progress
from etar.topics import admin
from etar_stack.supervisor import Service


def _group(settings: Settings):  # type: ignore[no-untyped-def]
    client = admin(settings)  # keep a reference: the futures die with their client
    futures = client.describe_consumer_groups([settings.sink_group_id])
    return futures[settings.sink_group_id].result(timeout=5)


def ready(settings: Settings) -> bool:
    """The sink's consumer group is stable with a member (this instance, when it has a name)."""
    group = _group(settings)
    if group.state != ConsumerGroupState.STABLE or not group.members:
        return False
    if not settings.sink_instance:
        return True
    return any(m.client_id == f"etar-sink-{settings.sink_instance}" for m in group.members)


def describe(settings: Settings) -> str:
    progress = read_progress(settings)
    line = progress.line() if progress else "no progress reported yet"
    if settings.sink_instance:
        group = _group(settings)
        for member in group.members:
            if member.client_id == f"etar-sink-{settings.sink_instance}":
                parts = sorted(tp.partition for tp in member.assignment.topic_partitions)
                line += f" partitions={parts}"
    return line


def _service(settings: Settings, name: str) -> Service:
    return Service(
        name=name,
        command=[sys.executable, "-m", "etar.sink.consumer"],
        port=None,
        url=f"{settings.kafka_topic} → {settings.clickhouse_table}",
        ready=lambda: ready(settings),
        describe=lambda: describe(settings),
        env=settings.environ("sink_instance") if settings.sink_instance else {},
        start_timeout=90,
    )


def service(settings: Settings) -> Service:
    return _service(settings, "sink")


def services(settings: Settings) -> list[Service]:
    """One sink, or on the cluster topology ``sink-1`` … in one consumer group."""
    if settings.topology != "cluster":
        return [service(settings)]
    return [_service(settings.model_copy(update={"sink_instance": str(n)}), f"sink-{n}")
            for n in range(1, SINK_CLUSTER_INSTANCES + 1)]
