"""Fixtures shared by every test folder.

``stack_settings``: one native stack for the whole session. It is reused when
``etar stack status`` finds every service up; otherwise it is started for the session and
stopped at the end. ``lane``: a topic, table, consumer group and bucket of a test's own on it;
its topics, consumer group, table, bucket, registry subjects and the sink's progress file are
removed at teardown (``tests/integration/test_cleanup.py`` checks none remains).
``unique``: a suffix for a test's names; in a test on the stack, every registry subject
holding it is deleted (soft, then hard) at teardown, so tests leave no subjects behind.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from etar.config import Settings, get_settings
from etar.extract import storage
from etar.sink.consumer import progress_path
from etar.topics import delete_topics, ensure_topic
from etar.warehouse import table as warehouse
from etar_stack import running
from tests.integration.lanes import delete_group, delete_subjects, start_sink


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    settings = get_settings()
    with running(settings):
        yield settings


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> Iterator[str]:
    """A short unique suffix so runs never collide on names; the registry subjects named
    with it are deleted after a test on the stack."""
    suffix = uuid.uuid4().hex[:10]
    yield suffix
    if "stack_settings" in request.fixturenames:
        delete_subjects(request.getfixturevalue("stack_settings"), suffix)


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
    storage.drop_bucket(settings)
    for leftover in (progress_path(settings), progress_path(settings).with_suffix(".tmp")):
        leftover.unlink(missing_ok=True)
    delete_topics(settings, [settings.kafka_topic, settings.kafka_dlq_topic])
    delete_group(settings, settings.sink_group_id)
    delete_subjects(settings, settings.kafka_topic)  # the lane's <topic>-value (and its DLQ's)


@pytest.fixture
def lane_sink(lane: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = start_sink(lane, tmp_path / "sink.log")
    yield process
    process.terminate()
    process.wait(30)
