"""Lanes: a topic, table, consumer group and bucket of a test's own, on the shared stack."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from etar import storage, warehouse
from etar.config import Settings
from etar.topics import ensure_topic
from tests.integration.lanes import start_sink


@pytest.fixture
def lane(stack_settings: Settings, unique: str) -> Iterator[Settings]:
    """A topic, dead-letter topic, table and consumer group used by this test only."""
    settings = stack_settings.model_copy(update={
        "kafka_topic": f"lane_{unique}", "kafka_dlq_topic": f"lane_{unique}_dlq",
        "clickhouse_table": f"lane_{unique}", "sink_group_id": f"lane-{unique}",
        "sink_batch_rows": 2_000, "sink_batch_seconds": 0.5,
        "s3_bucket": f"lane-{unique}"})
    ensure_topic(settings, settings.kafka_topic, 3)
    ensure_topic(settings, settings.kafka_dlq_topic, 1)
    warehouse.apply_schema(settings=settings)
    storage.ensure_bucket(settings)
    yield settings
    warehouse.client(settings).command(f"DROP TABLE IF EXISTS {settings.clickhouse_table}")


@pytest.fixture
def lane_sink(lane: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = start_sink(lane, tmp_path / "sink.log")
    yield process
    process.terminate()
    process.wait(30)
