"""Tests leave nothing on the stack: a lane's topics, consumer group, table, bucket and sink
progress file are removed at teardown, and its subjects and the subjects named with a test's
``unique`` suffix are deleted (soft, then hard).

The first test creates them and notes their names; the second, run after its teardown, finds
none of them, not even among soft-deleted subjects.
"""

from __future__ import annotations

import subprocess

import httpx
import pytest
from confluent_kafka.schema_registry import Schema

from etar.config import Settings
from etar.events.event import load_schema_str
from etar.events.serde import registry_client
from etar.sink.consumer import progress_path
from tests.integration.lanes import leftovers, produce, recent_minute, wait_for

pytestmark = pytest.mark.integration
CREATED: list[str] = []
LANE: list[Settings] = []


def _subjects(settings: Settings) -> list[str]:
    response = httpx.get(f"{settings.schema_registry_url}/subjects",
                         params={"deleted": "true"}, timeout=30)
    response.raise_for_status()
    return list(response.json())


def test_a_lane_and_a_probe_register_subjects(lane: Settings, unique: str,
                                             lane_sink: subprocess.Popen[bytes]) -> None:
    from etar.warehouse import table as warehouse

    minute = recent_minute(40)
    produce(lane, 20, minute, seed=7)  # the producer registers <topic>-value
    wait_for(lambda: warehouse.count_minute(minute, settings=lane) == 20, 60, "ingestion")
    probe = f"probe-{unique}-other"
    registry_client(lane).register_schema(probe, Schema(load_schema_str(), "AVRO"))
    CREATED[:] = [f"{lane.kafka_topic}-value", probe]
    LANE[:] = [lane]
    assert set(CREATED) <= set(_subjects(lane))
    assert sorted(leftovers(lane)) == sorted([
        f"topic {lane.kafka_topic}", f"topic {lane.kafka_dlq_topic}",
        f"group {lane.sink_group_id}", f"table {lane.clickhouse_table}",
        f"bucket {lane.s3_bucket}"])


def test_their_subjects_are_gone_after_teardown(stack_settings: Settings) -> None:
    assert CREATED, "run with the test above"
    left = set(CREATED) & set(_subjects(stack_settings))
    assert left == set(), f"subjects left behind: {sorted(left)}"


def test_nothing_else_of_the_lane_remains_after_teardown(stack_settings: Settings) -> None:
    assert LANE, "run with the first test above"
    lane = LANE[0]
    assert leftovers(lane) == []
    assert not progress_path(lane).exists()
