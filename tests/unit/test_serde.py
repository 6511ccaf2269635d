"""The UUID key serializer and the producer's Confluent-framed Avro value writer."""

from __future__ import annotations

import io
import random
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka.serialization import SerializationError
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from etar.events.event import (
    Event,
    EventGenerator,
    GeneratorConfig,
    clock_within_minute,
    parsed_schema,
    uniform_error_rates,
)
from etar.events.serde import (
    AvroRecordWriter,
    EventValueWriter,
    UUIDKeyDeserializer,
    UUIDKeySerializer,
    confluent_header,
)
from etar.minute import Minute


def test_uuid_key_round_trip_is_16_raw_bytes() -> None:
    for _ in range(100):
        value = uuid.uuid4()
        raw = UUIDKeySerializer()(value)
        assert raw == value.bytes and len(raw) == 16
        assert UUIDKeyDeserializer()(raw) == value


def test_text_uuid_is_accepted_and_null_stays_null() -> None:
    value = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert UUIDKeySerializer()(str(value)) == bytes.fromhex("12345678123456781234567812345678")
    assert UUIDKeySerializer()(None) is None
    assert UUIDKeyDeserializer()(None) is None


def test_bad_keys_are_refused_with_a_reason() -> None:
    with pytest.raises(SerializationError, match="not a UUID"):
        UUIDKeySerializer()("user-42")
    with pytest.raises(SerializationError, match="16 bytes"):
        UUIDKeyDeserializer()(b"\x00" * 15)


# --- the producer's value writer ------------------------------------------------------------

def _fastavro(schema: dict, record: dict, prefix: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    buffer.write(prefix)
    schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def test_compiled_writer_writes_what_fastavro_writes() -> None:
    schema = parsed_schema()
    writer = AvroRecordWriter(schema)
    generator = EventGenerator(GeneratorConfig(seed=4, error_rates=uniform_error_rates(0.3)))
    records = [record for _, record in generator.records(20_000)]
    assert all(writer.write(r) == _fastavro(schema, r) for r in records)
    # Values the generator never makes: extremes, datetimes, UUID objects, long and
    # non-ASCII strings, defaults left out.
    edge = dict(records[0], event_ts=datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC),
                event_id=uuid.uuid4(), quantity=-(2**31), price=-0.0,
                page_url="/s?q=" + "ü€😀" * 400, referrer="x" * 5_000)
    for key in ("error_code", "error_message", "search_query"):
        del edge[key]
    for record in (edge, dict(edge, event_ts=2**62, quantity=2**31 - 1, price=1e300)):
        assert writer.write(record, b"\x00\x00\x00\x00\x07") == _fastavro(
            schema, record, b"\x00\x00\x00\x00\x07")


def test_values_of_steps_are_the_values_of_their_records() -> None:
    """The producer's path (steps joined from cached fragments) writes byte for byte what the
    record writer and fastavro write for the same events, with either writer behind it."""
    def generator() -> EventGenerator:
        clock = clock_within_minute(Minute.parse("2026-01-01T10:30"), random.Random(5))
        return EventGenerator(GeneratorConfig(seed=5, users=50, products=20,
                                              error_rates=uniform_error_rates(0.3)), clock)

    keyed = generator().records(20_000)
    source = generator()
    values: list[bytes] = []
    for size in (1, 999, 7_000, 12_000):  # batch sizes leave the stream unchanged
        values += EventValueWriter(3).write_steps(source.steps(size), source.event_ids(size))
    assert values == EventValueWriter(3).write([record for _, record in keyed])
    schema = parsed_schema()
    assert all(value == _fastavro(schema, record, confluent_header(3))
               for value, (_, record) in zip(values[:2_000], keyed, strict=False))
    assert sum(record["product_id"] is not None for _, record in keyed) > 5_000
    assert len({record["error_code"] for _, record in keyed}) > 5

    other_order = dict(schema, fields=list(reversed(schema["fields"])))  # no fragments: records
    steps, ids = generator().steps(300), generator().event_ids(300)
    assert EventValueWriter(3, other_order).write_steps(steps, ids) == [
        _fastavro(other_order, record, confluent_header(3)) for _, record in keyed[:300]]


def test_compiled_writer_refuses_what_does_not_fit() -> None:
    writer = AvroRecordWriter(parsed_schema())
    record = next(iter(EventGenerator(GeneratorConfig(seed=1)).records(1)))[1]
    with pytest.raises(ValueError, match="enum"):
        writer.write(dict(record, event_type="REFUND"))
    with pytest.raises(ValueError, match="32-bit"):
        writer.write(dict(record, quantity=2**31))
    without_id = dict(record)
    del without_id["event_id"]  # no default: required
    with pytest.raises(KeyError):
        writer.write(without_id)


def test_schemas_beyond_the_compiled_subset_fall_back_to_fastavro() -> None:
    schema = parse_schema({"type": "record", "name": "T", "fields": [
        {"name": "tags", "type": {"type": "array", "items": "string"}}]})
    with pytest.raises(ValueError, match="array"):
        AvroRecordWriter(schema)
    writer = EventValueWriter(9, schema)
    assert writer.write([{"tags": ["a", "b"]}]) == [_fastavro(schema, {"tags": ["a", "b"]},
                                                              confluent_header(9))]


def test_values_are_confluent_framed_avro_of_the_events() -> None:
    assert confluent_header(258) == b"\x00\x00\x00\x01\x02"
    def generator() -> EventGenerator:
        clock = clock_within_minute(Minute.parse("2026-01-01T10:30"), random.Random(6))
        return EventGenerator(GeneratorConfig(seed=6), clock)

    keyed = generator().records(500)
    values = EventValueWriter(258).write([record for _, record in keyed])
    expected = generator().take(500)
    for value, event in zip(values, expected, strict=True):
        assert value[:5] == b"\x00\x00\x00\x01\x02"
        decoded = schemaless_reader(io.BytesIO(value[5:]), parsed_schema(), parsed_schema())
        assert Event.from_avro(decoded) == event
