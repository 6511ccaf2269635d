"""The workbook's sandbox on a stack with nothing to read (a lane: a table, topic and bucket
of the test's own stand for an empty stack): demo events go to the sandbox, never to the
stack's table, are reused by the next notebook, and ``drop_sandbox`` removes it all."""

from __future__ import annotations

import pytest

from etar import workbook
from etar.config import Settings
from etar.events.serde import registry_client
from etar.extract import storage
from etar.topics import admin
from etar.warehouse import table as warehouse

pytestmark = pytest.mark.integration


def test_an_empty_stack_gets_demo_events_in_the_sandbox_only(lane: Settings) -> None:
    sandbox = workbook.sandbox_settings(lane)
    try:
        first = workbook.workbench("", settings=lane)
        assert first.demo and not first.live and "produced into the sandbox" in first.why
        assert first.settings.clickhouse_table == f"{lane.clickhouse_table}_workbook"
        assert first.settings.s3_bucket == f"{lane.s3_bucket}-workbook"
        assert "SANDBOX" in str(first)
        assert warehouse.count_minute(first.minute, settings=sandbox) == workbook.DEMO_EVENTS
        assert warehouse.count_minute(first.minute, settings=lane) == 0  # the stack's: empty

        again = workbook.workbench("", settings=lane)  # the next notebook reuses them
        assert again.minute == first.minute and "already in the sandbox" in again.why
        assert warehouse.count_minute(first.minute, settings=sandbox) == workbook.DEMO_EVENTS
        with pytest.raises(workbook.NotebookParameterError, match="no minute with events"):
            workbook.workbench("", write="live", settings=lane)
    finally:
        workbook.drop_sandbox(lane)
    assert not storage.client(sandbox).bucket_exists(sandbox.s3_bucket)
    assert sandbox.kafka_topic not in admin(sandbox).list_topics(timeout=10).topics
    assert f"{sandbox.kafka_topic}-value" not in registry_client(sandbox).get_subjects()
    assert not warehouse.client(sandbox).command(
        "EXISTS TABLE {table:Identifier}", parameters={"table": sandbox.clickhouse_table})
