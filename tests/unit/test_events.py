"""The event schema and the session generator."""

from __future__ import annotations

import io
import json
import random
import uuid
from collections import Counter, defaultdict

import avro.schema
import pytest
from fastavro import schemaless_reader, schemaless_writer

from etar.errors import ConfigError
from etar.events.event import (
    Event,
    EventGenerator,
    EventType,
    GeneratorConfig,
    Status,
    clock_within_minute,
    from_millis,
    load_schema_str,
    now_millis,
    parsed_schema,
    to_millis,
    uniform_error_rates,
    utc_now,
)
from etar.minute import Minute


def test_schema_parses_with_both_avro_implementations() -> None:
    text = load_schema_str()
    avro.schema.parse(text)
    assert parsed_schema()["name"] == "dev.etar.events.UserInteraction"


def test_logical_types_are_nested_inside_the_type() -> None:
    """A logicalType beside the field's type is silently ignored; ours are nested."""
    fields = {f["name"]: f for f in json.loads(load_schema_str())["fields"]}
    for name in ("event_id", "user_id", "session_id"):
        assert fields[name]["type"] == {"type": "string", "logicalType": "uuid"}
    assert fields["event_ts"]["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert all("logicalType" not in f for f in fields.values())


def test_enums_match_the_python_types() -> None:
    fields = {f["name"]: f for f in json.loads(load_schema_str())["fields"]}
    assert fields["event_type"]["type"]["symbols"] == [t.value for t in EventType]
    assert fields["status"]["type"]["symbols"] == [s.value for s in Status]


def test_events_round_trip_through_avro() -> None:
    for event in EventGenerator(GeneratorConfig(seed=3)).take(200):
        buffer = io.BytesIO()
        schemaless_writer(buffer, parsed_schema(), event.to_avro())
        buffer.seek(0)
        decoded = schemaless_reader(buffer, parsed_schema(), parsed_schema())
        assert Event.from_avro(decoded) == event


def test_same_seed_same_events_other_seed_other_events() -> None:
    def first(seed: int) -> list[dict]:
        clock = clock_within_minute(Minute.parse("2026-01-01T10:30"),
                                    __import__("random").Random(seed))
        return [e.to_avro() for e in EventGenerator(GeneratorConfig(seed=seed), clock).take(50)]

    assert first(11) == first(11)
    assert first(11) != first(12)


def test_sessions_walk_the_funnel() -> None:
    events = EventGenerator(GeneratorConfig(seed=5, error_rates=uniform_error_rates(0.0))
                            ).take(20_000)
    by_session: dict = defaultdict(list)
    for event in events:
        by_session[event.session_id].append(event)
    assert len(by_session) > 500
    for session in by_session.values():
        types = [e.event_type for e in session]
        assert types[0] is EventType.PAGE_VIEW
        assert len({e.user_id for e in session}) == 1
        for index, event_type in enumerate(types):
            if event_type is EventType.PURCHASE:
                assert types[index - 1] in (EventType.CHECKOUT, EventType.PURCHASE)
            if event_type is EventType.CHECKOUT:
                assert EventType.ADD_TO_CART in types[:index]
    counts = Counter(e.event_type for e in events)
    # A funnel: each later stage is rarer than the browsing stages.
    assert counts[EventType.PAGE_VIEW] > counts[EventType.CHECKOUT] > counts[EventType.PURCHASE] > 0
    assert counts[EventType.PRODUCT_VIEW] > counts[EventType.ADD_TO_CART]


def test_fields_match_the_event_type_and_status() -> None:
    for event in EventGenerator(GeneratorConfig(seed=9)).take(5_000):
        has_product = event.event_type not in (EventType.PAGE_VIEW, EventType.SEARCH)
        assert (event.product_id is not None) == has_product
        assert (event.price is not None) == has_product
        assert (event.search_query is not None) == (event.event_type is EventType.SEARCH)
        failed = event.status is Status.ERROR
        assert (event.error_code is not None) == failed == (event.error_message is not None)


def test_error_rate_per_event_type() -> None:
    rates = uniform_error_rates(0.0)
    rates[EventType.PURCHASE] = 0.5
    events = EventGenerator(GeneratorConfig(seed=1, error_rates=rates)).take(40_000)
    errors = Counter(e.event_type for e in events if e.status is Status.ERROR)
    purchases = sum(1 for e in events if e.event_type is EventType.PURCHASE)
    assert set(errors) == {EventType.PURCHASE}
    assert 0.4 < errors[EventType.PURCHASE] / purchases < 0.6


def test_uniform_error_rate_is_respected() -> None:
    events = EventGenerator(GeneratorConfig(seed=2, error_rates=uniform_error_rates(0.1))
                            ).take(20_000)
    share = sum(e.status is Status.ERROR for e in events) / len(events)
    assert 0.08 < share < 0.12


def test_clock_within_minute_stays_inside_it() -> None:
    minute = Minute.parse("2026-01-01T10:30")
    clock = clock_within_minute(minute, __import__("random").Random(0))
    stamps = [clock() for _ in range(1000)]
    assert all(minute.start <= s < minute.end for s in stamps)
    assert all(s.microsecond % 1000 == 0 for s in stamps)


def test_bad_error_rate_is_refused() -> None:
    with pytest.raises(ConfigError, match="within"):
        GeneratorConfig(error_rates=uniform_error_rates(1.5))


def test_records_are_the_events_keyed_by_user() -> None:
    """What the producer sends (``records``) is what iterating the generator gives."""
    def generator() -> EventGenerator:
        clock = clock_within_minute(Minute.parse("2026-01-01T10:30"), random.Random(8))
        return EventGenerator(GeneratorConfig(seed=8, error_rates=uniform_error_rates(0.2)), clock)

    keyed = generator().records(3_000)
    events = generator().take(3_000)
    for (key, record), event in zip(keyed, events, strict=True):
        assert key == event.user_id.bytes
        assert record == dict(event.to_avro(), event_ts=to_millis(event.event_ts))
        assert isinstance(record["event_id"], str) and uuid.UUID(record["event_id"]).version == 4


def test_to_avro_and_back_without_sharing_state() -> None:
    event = EventGenerator(GeneratorConfig(seed=12)).take(1)[0]
    record = event.to_avro()
    assert record["event_id"] == str(event.event_id) and record["event_type"] == event.event_type
    assert Event.from_avro(record) == event
    assert Event.from_avro(dict(record, event_ts=to_millis(event.event_ts))) == event


def test_millis_clocks_agree_with_datetimes() -> None:
    minute = Minute.parse("2026-01-01T10:30")
    as_datetime = clock_within_minute(minute, __import__("random").Random(3))
    as_millis = clock_within_minute(minute, __import__("random").Random(3))
    for _ in range(100):
        assert to_millis(as_datetime()) == as_millis.millis()
    assert from_millis(to_millis(minute.start)) == minute.start
    assert abs(now_millis() - to_millis(utc_now())) < 1_000
