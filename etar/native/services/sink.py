"""The Kafka → ClickHouse sink as a native-stack service (``python -m etar.sink``)."""

from __future__ import annotations

import sys

from confluent_kafka import ConsumerGroupState

from etar.config import Settings
from etar.native.supervisor import Service
from etar.sink import read_progress
from etar.topics import admin


def ready(settings: Settings) -> bool:
    """The sink's consumer group is stable with a member."""
    client = admin(settings)  # keep a reference: the futures die with their client
    futures = client.describe_consumer_groups([settings.sink_group_id])
    group = futures[settings.sink_group_id].result(timeout=5)
    return group.state == ConsumerGroupState.STABLE and bool(group.members)


def describe(settings: Settings) -> str:
    progress = read_progress(settings)
    return progress.line() if progress else "no progress reported yet"


def service(settings: Settings) -> Service:
    return Service(
        name="sink",
        command=[sys.executable, "-m", "etar.sink"],
        port=None,
        url=f"{settings.kafka_topic} → {settings.clickhouse_table}",
        ready=lambda: ready(settings),
        describe=lambda: describe(settings),
        start_timeout=90,
    )
