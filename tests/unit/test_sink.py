"""The sink's pure logic: rows, minute grouping, dead-letter reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from etar import warehouse
from etar.events import EventGenerator, GeneratorConfig
from etar.sink import _wire_info, event_row, insert_blocks


def _rows_over(minutes: int, per_minute: int = 3) -> list[tuple]:
    start = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    events = EventGenerator(GeneratorConfig(seed=1)).take(minutes * per_minute)
    rows = []
    for index, event in enumerate(events):
        row = list(event_row(event))
        row[warehouse.COLUMNS.index("event_ts")] = start + timedelta(
            minutes=index % minutes, seconds=index % 60)
        rows.append(tuple(row))
    return rows


def test_event_row_follows_the_insert_columns() -> None:
    event = EventGenerator(GeneratorConfig(seed=2)).take(1)[0]
    row = event_row(event)
    assert len(row) == len(warehouse.COLUMNS)
    assert row[warehouse.COLUMNS.index("event_id")] == event.event_id
    assert row[warehouse.COLUMNS.index("event_ts")] == event.event_ts


def test_insert_blocks_never_span_more_minutes_than_allowed() -> None:
    rows = _rows_over(minutes=250)
    blocks = insert_blocks(rows, max_partitions=100)
    ts = warehouse.COLUMNS.index("event_ts")
    assert [len({r[ts].replace(second=0) for r in b}) for b in blocks] == [100, 100, 50]
    assert sorted(map(id, rows)) == sorted(id(r) for b in blocks for r in b)


def test_one_block_when_the_batch_fits() -> None:
    rows = _rows_over(minutes=3)
    assert insert_blocks(rows, max_partitions=100) == [sorted(
        rows, key=lambda r: r[warehouse.COLUMNS.index("event_ts")].replace(second=0))]


def test_wire_info_names_the_schema_id_or_the_missing_framing() -> None:
    assert "schema id 42" in _wire_info(b"\x00\x00\x00\x00\x2a\x01")
    assert "no Confluent framing" in _wire_info(b"hello")
    assert _wire_info(None) == "empty value"
