"""Tests leave nothing in the registry: a lane's subjects and the subjects named with a test's
``unique`` suffix are deleted (soft, then hard) at teardown.

The first test creates them and notes their names; the second, run after its teardown, finds
none of them, not even among soft-deleted subjects.
"""

from __future__ import annotations

import httpx
import pytest
from confluent_kafka.schema_registry import Schema

from etar.config import Settings
from etar.events.event import load_schema_str
from etar.events.serde import registry_client
from tests.integration.lanes import produce, recent_minute

pytestmark = pytest.mark.integration
CREATED: list[str] = []


def _subjects(settings: Settings) -> list[str]:
    response = httpx.get(f"{settings.schema_registry_url}/subjects",
                         params={"deleted": "true"}, timeout=30)
    response.raise_for_status()
    return list(response.json())


def test_a_lane_and_a_probe_register_subjects(lane: Settings, unique: str) -> None:
    produce(lane, 20, recent_minute(40), seed=7)  # the producer registers <topic>-value
    probe = f"probe-{unique}-other"
    registry_client(lane).register_schema(probe, Schema(load_schema_str(), "AVRO"))
    CREATED[:] = [f"{lane.kafka_topic}-value", probe]
    assert set(CREATED) <= set(_subjects(lane))


def test_their_subjects_are_gone_after_teardown(stack_settings: Settings) -> None:
    assert CREATED, "run with the test above"
    left = set(CREATED) & set(_subjects(stack_settings))
    assert left == set(), f"subjects left behind: {sorted(left)}"
