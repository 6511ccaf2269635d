"""The sink's pure logic: pre-check, plans, segments, error classes, bisection, dead letters."""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from fastavro import schemaless_writer

from etar.config import get_settings
from etar.events.event import EventGenerator, GeneratorConfig, load_schema_str, parsed_schema
from etar.events.serde import UUIDKeySerializer
from etar.sink.batch import (
    MAX_EVENT_BYTES,
    BadData,
    Batch,
    DeadLetter,
    Failure,
    KnownSchemas,
    Prechecker,
    SinkError,
    TooManyPartitions,
    classify,
    decode_plan,
    encode_plan,
    failing_row,
    isolate,
    precheck,
    wire_info,
)
from etar.sink.consumer import Sink
from etar.sink.dead_letters import REPLACED_HEADER, DeadLetters


def _value(schema_id: int = 1) -> tuple[bytes, bytes]:
    """(key, value) of a real event framed like the producer frames it."""
    event = EventGenerator(GeneratorConfig(seed=3)).take(1)[0]
    body = io.BytesIO()
    schemaless_writer(body, parsed_schema(), event.to_avro())
    key = UUIDKeySerializer()(event.user_id)
    assert key is not None
    return key, b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()


def _ours(schema_id: int) -> str | None:
    return None if schema_id == 1 else f"unknown schema id {schema_id}"


def test_precheck_lets_a_real_event_through() -> None:
    key, value = _value()
    assert precheck(key, value, _ours) is None


@pytest.mark.parametrize(("kind", "expected"), [
    ("tombstone", "tombstone"), ("oversized", "oversized"), ("garbage", "not Confluent"),
    ("short", "not Confluent"), ("unknown id", "unknown schema id 7"),
    ("no key", "bad key"), ("short key", "bad key"), ("other user", "bad key"),
    ("not uuid fields", "decode error")])
def test_precheck_names_each_kind_of_poison(kind: str, expected: str) -> None:
    key, value = _value()
    cases: dict[str, tuple[bytes | None, bytes | None]] = {
        "tombstone": (key, None),
        "oversized": (key, value + b"x" * MAX_EVENT_BYTES),
        "garbage": (key, b"not avro at all"),
        "short": (key, b"\x00\x00\x00"),
        "unknown id": (key, _value(7)[1]),
        "no key": (None, value),
        "short key": (b"short", value),
        "other user": (uuid.uuid4().bytes, value),
        "not uuid fields": (key, value[:5] + b"\x02" + value[6:]),
    }
    reason = precheck(*cases[kind], _ours)
    assert reason is not None and expected in reason


def test_known_schemas_asks_once_and_tells_schemas_apart() -> None:
    asked: list[int] = []
    other = json.dumps({"type": "record", "name": "Other", "fields": []})
    ours = json.loads(load_schema_str())
    ours["doc"] = "documentation differs, the shape does not"
    registry = {1: json.dumps(ours), 2: other}

    def fetch(schema_id: int) -> str | None:
        asked.append(schema_id)
        return registry.get(schema_id)

    known = KnownSchemas(fetch, load_schema_str())
    assert known(1) is None and known(1) is None
    assert "another schema (Other)" in (known(2) or "")
    assert "unknown schema id 3" in (known(3) or "")
    assert "unknown schema id 3" in (known(3) or "")
    assert asked == [1, 2, 3, 3]  # a verdict is kept, an unknown id is asked again


def test_plans_round_trip_and_ignore_foreign_metadata() -> None:
    assert decode_plan(encode_plan([120, 80])) == [80, 120]
    assert decode_plan("") == [] and decode_plan(None) == [] and decode_plan("other") == []


def _fill(batch: Batch, offsets: range, cuts: list[int], reason: str | None = None) -> None:
    for offset in offsets:
        batch.add(("t", 0), offset, 1, cuts, b"k", b"v%d" % offset, None, reason, 0.0)


def test_a_planned_cut_reproduces_the_segments_of_the_lost_insert() -> None:
    cuts = [105, 112]
    batch = Batch()
    _fill(batch, range(100, 108), cuts)
    ready = batch.take_ready(lambda tp: bool(cuts))
    assert [(s.start, s.end) for s in ready] == [(100, 105)]  # [105, 108) waits for 112
    _fill(batch, range(108, 115), cuts)
    ready = batch.take_ready(lambda tp: bool(cuts))
    assert [(s.start, s.end, len(s.values)) for s in ready] == [(105, 112, 7), (112, 115, 3)]
    assert batch.rows == 0 and batch.started is None


def test_segment_tokens_depend_on_offsets_and_bytes() -> None:
    batch = Batch()
    _fill(batch, range(0, 4), [])
    _fill(batch, range(4, 5), [], reason="poison")
    segment = batch.take_ready(lambda tp: False)[0]
    assert (segment.start, segment.end, len(segment.values), len(segment.dead)) == (0, 5, 4, 1)
    body = segment.body(1, 3)
    assert body == b"v1v2"
    assert segment.token(1, 3, body) == segment.token(1, 3, b"v1v2")
    assert segment.token(1, 3, body) != segment.token(1, 3, b"v1v3")
    assert segment.token(1, 3, body).startswith("t/0/1-2/")


def test_dropping_a_partition_forgets_its_messages() -> None:
    batch = Batch()
    _fill(batch, range(0, 3), [])
    batch.add(("t", 1), 0, 1, [], b"k", b"v", None, None, 0.0)
    batch.drop([("t", 0)])
    assert batch.rows == 1 and list(batch.segments) == [("t", 1)]


@pytest.mark.parametrize(("code", "message", "kind"), [
    (117, "Invalid magic byte (at row 3)", Failure.BAD_DATA),
    (376, "Cannot parse UUID", Failure.BAD_DATA),
    (1001, "std::exception. Code: 1001, type: avro::Exception, e.what() = EOF reached",
     Failure.BAD_DATA),
    (86, "Received error from remote server /schemas/ids/9. HTTP status code: 404",
     Failure.BAD_DATA),
    (86, "Received error from remote server /schemas/ids/9. HTTP status code: 503",
     Failure.TRANSIENT),
    (210, "Connection refused: while fetching schema id = 1", Failure.TRANSIENT),
    (None, "HTTP driver received HTTP status 500", Failure.TRANSIENT),
    (252, "Too many partitions for single INSERT block (more than 100)", Failure.SPLIT),
    (252, "Too many parts (3000). Merges are processing significantly slower",
     Failure.TRANSIENT),
    (241, "Memory limit (for query) exceeded: would use 9.31 GiB", Failure.SPLIT),
    (16, "No such column nope in table", Failure.PERMANENT),
    (60, "Table default.x does not exist", Failure.PERMANENT),
    (1001, "std::exception: bad_alloc", Failure.PERMANENT)])
def test_classify_insert_failures(code: int | None, message: str, kind: Failure) -> None:
    assert classify(code, message) is kind


def test_failing_row_reads_clickhouse_s_row_number() -> None:
    assert failing_row("Cannot parse UUID: (at row 101)\n: While executing") == 101
    assert failing_row("EOF reached") is None


class _Table:
    """A fake ClickHouse: refuses any range holding a poison row, records what went in."""

    def __init__(self, poison: set[int], hint: bool, max_rows: int = 1_000_000) -> None:
        self.poison, self.hint, self.max_rows = poison, hint, max_rows
        self.calls: list[tuple[int, int]] = []
        self.stored: list[int] = []

    def insert(self, lo: int, hi: int) -> None:
        self.calls.append((lo, hi))
        bad = sorted(p for p in self.poison if lo <= p < hi)
        if bad:
            raise BadData(f"row {bad[0]} is bad", bad[0] - lo + 1 if self.hint else None)
        if hi - lo > self.max_rows:
            raise TooManyPartitions
        self.stored.extend(range(lo, hi))


@pytest.mark.parametrize("hint", [True, False])
def test_isolate_finds_every_poison_row_and_stores_the_rest_once(hint: bool) -> None:
    table = _Table({0, 17, 18, 63, 99}, hint)
    poison = isolate(100, table.insert)
    assert [row for row, _ in poison] == [0, 17, 18, 63, 99]
    assert poison[1][1] == "row 17 is bad"
    assert sorted(table.stored) == [r for r in range(100) if r not in table.poison]
    assert len(table.stored) == len(set(table.stored))


def test_isolate_uses_the_named_row_instead_of_halving() -> None:
    hinted, halved = _Table({500}, hint=True), _Table({500}, hint=False)
    isolate(1000, hinted.insert)
    isolate(1000, halved.insert)
    assert len(hinted.calls) == 4 < len(halved.calls)  # all, [0:500), [500], [501:)


def test_isolate_is_deterministic_so_a_replay_inserts_the_same_ranges() -> None:
    first, second = _Table({3, 40}, hint=False), _Table({3, 40}, hint=False)
    isolate(64, first.insert)
    isolate(64, second.insert)
    assert first.calls == second.calls


def test_isolate_splits_blocks_spanning_too_many_partitions_without_dead_letters() -> None:
    table = _Table(set(), hint=False, max_rows=10)
    assert isolate(64, table.insert) == []
    assert sorted(table.stored) == list(range(64))


class _Producer:
    """A fake producer whose delivery reports say what the test wants."""

    def __init__(self, fail: bool = False, deliver: bool = True) -> None:
        self.fail, self.deliver = fail, deliver
        self.sent: list[dict[str, Any]] = []
        self._callbacks: list[Any] = []

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        self.sent.append({"topic": topic, **kwargs})
        self._callbacks.append(kwargs["on_delivery"])

    def flush(self, timeout: float = 0) -> int:
        if not self.deliver:
            return len(self._callbacks)
        for callback in self._callbacks:
            error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if self.fail else None
            callback(error, _Message())
        self._callbacks = []
        return 0

    def poll(self, timeout: float = 0) -> int:
        return 0


class _Message:
    def headers(self) -> list[tuple[str, bytes]]:
        return [("__connect.errors.offset", b"7")]


def _letter() -> DeadLetter:
    return DeadLetter("events", 2, 7, b"k", b"v", [("trace", b"1")], "bad key: …")


def test_dead_letters_carry_connect_headers_and_the_message_unchanged() -> None:
    producer = _Producer()
    letters = DeadLetters(producer, "dlq")
    letters.send([_letter()])
    letters.confirm(1)
    sent = producer.sent[0]
    assert (sent["topic"], sent["key"], sent["value"]) == ("dlq", b"k", b"v")
    assert dict(sent["headers"]) == {
        "trace": b"1", "__connect.errors.topic": b"events",
        "__connect.errors.partition": b"2", "__connect.errors.offset": b"7",
        "__connect.errors.exception.message": b"bad key: \xe2\x80\xa6",
        "__connect.errors.connector.name": b"etar-sink"}


@pytest.mark.parametrize("producer", [_Producer(fail=True), _Producer(deliver=False)])
def test_a_dead_letter_not_acknowledged_stops_the_commit(producer: _Producer) -> None:
    letters = DeadLetters(producer, "dlq")
    letters.send([_letter()])
    with pytest.raises(SinkError, match="dead letters"):
        letters.confirm(0.1)


class _LimitedTopic(_Producer):
    """A fake producer for a topic refusing records over ``limit`` bytes (as the broker
    does), or refusing them at ``produce()`` (over the producer's own message.max.bytes)."""

    def __init__(self, limit: int, at_produce: bool = False) -> None:
        super().__init__()
        self.limit, self.at_produce = limit, at_produce
        self._sizes: list[int] = []

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        size = len(kwargs["value"] or b"") + sum(len(k) + len(v) for k, v in kwargs["headers"])
        if self.at_produce and size > self.limit:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        super().produce(topic, *args, **kwargs)
        self._sizes.append(size)

    def flush(self, timeout: float = 0) -> int:
        for callback, size in zip(self._callbacks, self._sizes, strict=True):
            too_large = size > self.limit
            callback(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if too_large else None,
                     _Message())
        self._callbacks, self._sizes = [], []
        return 0


@pytest.mark.parametrize("at_produce", [False, True])
def test_a_dead_letter_too_large_for_the_topic_is_replaced_by_its_coordinates(
        at_produce: bool) -> None:
    producer = _LimitedTopic(limit=10_000, at_produce=at_produce)
    big = DeadLetter("events", 1, 42, b"k" * 16, b"\x00" + b"x" * 1_048_000, [("trace", b"1")],
                     "oversized: 1048001 bytes", timestamp=1_700_000_000_123)
    letters = DeadLetters(producer, "dlq")
    letters.send([_letter(), big])
    letters.confirm(1)  # no SinkError: the sink commits and moves on
    assert letters.replaced == 1
    original, replaced = [s for s in producer.sent if len(s["value"]) < 10_000]
    assert original["value"] == b"v"
    body = json.loads(replaced["value"])
    assert (body["topic"], body["partition"], body["offset"], body["timestamp"]) == (
        "events", 1, 42, 1_700_000_000_123)
    assert base64.b64decode(body["key"]) == b"k" * 16 == replaced["key"]
    assert body["value_bytes"] == 1_048_001 and body["reason"] == "oversized: 1048001 bytes"
    assert "larger than 'dlq' accepts" in body["replaced"]
    headers = dict(replaced["headers"])
    assert headers["__connect.errors.offset"] == b"42"
    assert headers["__connect.errors.exception.message"].startswith(b"oversized")
    assert REPLACED_HEADER in headers and "trace" not in headers


def test_a_replacement_that_fails_too_stops_the_commit() -> None:
    producer = _LimitedTopic(limit=10)
    letters = DeadLetters(producer, "dlq")
    letters.send([DeadLetter("events", 0, 1, b"k", b"x" * 100, None, "oversized")])
    with pytest.raises(SinkError, match="dead letters failed"):
        letters.confirm(0.1)


def test_wire_info_names_the_schema_id_or_the_missing_framing() -> None:
    assert "schema id 42" in wire_info(b"\x00\x00\x00\x00\x2a\x01")
    assert "no Confluent framing" in wire_info(b"hello")
    assert wire_info(None) == "empty value"


class _Consumer:
    """Records commits; a lost partition must never reach it."""

    def __init__(self) -> None:
        self.commits: list[Any] = []

    def commit(self, **kwargs: Any) -> list[Any]:
        self.commits.append(kwargs)
        raise AssertionError("commit called")


def _sink(consumer: _Consumer) -> Sink:
    return Sink(get_settings(), ch=object(), consumer=consumer,  # type: ignore[arg-type]
                dlq=_Producer(), schemas=_ours)  # type: ignore[arg-type]


def test_on_lost_commits_nothing_and_never_raises() -> None:
    consumer = _Consumer()
    sink = _sink(consumer)
    sink.shared.epochs[("t", 0)] = 1
    sink._finished[("t", 0)] = (10, 1)
    sink.batch.add(("t", 0), 10, 1, [], b"k", b"v", None, None, 0.0)
    sink._on_lost(consumer, [TopicPartition("t", 0)])  # type: ignore[arg-type]
    sink._on_lost(consumer, None)  # type: ignore[arg-type]  # a broken call is logged only
    assert consumer.commits == [] and sink.batch.rows == 0 and not sink._finished


def test_on_revoke_does_not_raise_when_the_commit_fails() -> None:
    consumer = _Consumer()
    sink = _sink(consumer)
    sink.shared.epochs[("t", 0)] = 1
    sink._finished[("t", 0)] = (10, 1)
    sink._on_revoke(consumer, [TopicPartition("t", 0)])  # type: ignore[arg-type]
    assert len(consumer.commits) == 1 and ("t", 0) not in sink.shared.epochs


class _Consumed:
    """A consumed message of any partition, or a consumer error."""

    def __init__(self, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 error: object = None) -> None:
        self._partition, self._offset, self._key, self._value = partition, offset, key, value
        self._error = error
        self._headers: list[tuple[str, bytes]] | None = [("trace", b"%d" % offset)]

    def error(self) -> object:
        return self._error

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (2, 1_700_000_000_000 + self._offset)  # (LogAppendTime, ms)


def _segments(batch: Batch) -> list[tuple[Any, ...]]:
    return [(s.tp, s.epoch, s.start, s.end, s.sealed, s.offsets, s.values, s.keys, s.headers,
             [(d.offset, d.key, d.value, d.headers, d.reason, d.timestamp) for d in s.dead])
            for group in batch.segments.values() for s in group]


def test_take_keeps_exactly_what_precheck_and_add_keep() -> None:
    """The fast path of Batch.take agrees with precheck + add message by message: poison of
    every kind, an upper-case user_id (valid, the fast path leaves it to precheck), planned
    cuts, a revoked partition, consumer errors, partitions interleaved."""
    key, value = _value()
    upper = value[:43] + value[43:79].upper() + value[79:]
    kinds: list[tuple[bytes | None, bytes | None]] = [
        (key, value), (key, None), (key, b"not avro at all"), (key, _value(7)[1]),
        (None, value), (b"short", value), (uuid.uuid4().bytes, value), (key, upper),
        (key, value[:5] + b"\x02" + value[6:]), (key, value + b"x" * MAX_EVENT_BYTES)]
    messages: list[_Consumed] = []
    for run in range(4):
        for partition in (0, 1, 2):  # partition 2 is not ours (revoked meanwhile)
            base = 100 + run * 40
            messages += [_Consumed(partition, base + i, key, value) for i in range(10)]
            messages += [_Consumed(partition, base + 10 + i, *kinds[(i + run) % len(kinds)])
                         for i in range(len(kinds))]
    messages.insert(5, _Consumed(0, -1, None, None, error="fetch failed"))
    epochs = {("t", 0): 1, ("t", 1): 2}

    def plans() -> dict[tuple[str, int], list[int]]:
        return {("t", 0): [], ("t", 1): [104, 133, 190]}

    fast, fast_cuts = Batch(), plans()
    errors = fast.take("t", messages, epochs, fast_cuts, Prechecker(_ours), 5.0)
    slow, slow_cuts = Batch(), plans()
    for m in messages:
        tp = ("t", m.partition())
        if m.error() is None and tp in epochs:
            reason = precheck(m.key(), m.value(), _ours)
            slow.add(tp, m.offset(), epochs[tp], slow_cuts[tp], m.key(), m.value(),
                     m.headers(), reason, 5.0, m.timestamp()[1] if reason else None)
    assert errors == ["fetch failed"]
    assert _segments(fast) == _segments(slow) and fast_cuts == slow_cuts
    assert (fast.rows, fast.messages, fast.bytes, fast.started) == (
        slow.rows, slow.messages, slow.bytes, slow.started)
    assert fast.rows == 2 * 4 * (10 + 2)  # the valid ones and the upper-case user_id
    assert len([s for s in fast.segments[("t", 1)] if s.sealed]) == 3


# --- the sink's loop against a fake broker and a fake ClickHouse -----------------------------
TP = ("t", 0)


class _Msg(_Consumed):
    """A consumed message of partition ``TP``, without headers."""

    def __init__(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        super().__init__(TP[1], offset, key, value)
        self._headers = None

    def topic(self) -> str:
        return TP[0]


def _events(offsets: range) -> list[_Msg]:
    key, value = _value()
    return [_Msg(o, key, value) for o in offsets]


class _Broker:
    """A fake consumer: one partition, its committed offset and metadata, scripted fetches."""

    def __init__(self, offset: int = -1001, metadata: str = "",
                 fetch: Callable[[int], list[_Msg]] | None = None) -> None:
        self.stored = (offset, metadata)
        self.commits: list[tuple[int, str]] = []
        self.fetch = fetch or (lambda num: [])
        self.consumed = 0
        self.committed_calls = 0
        self.committed_error: KafkaException | None = None
        self._assign: Any = None

    def subscribe(self, topics: list[str], on_assign: Any, **callbacks: Any) -> None:
        self._assign = on_assign

    def consume(self, num: int, timeout: float) -> list[_Msg]:
        if self._assign is not None:  # the first poll joins the group
            assign, self._assign = self._assign, None
            assign(self, [TopicPartition(*TP)])
        self.consumed += 1
        return self.fetch(num)

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[Any]:
        self.committed_calls += 1
        if self.committed_error is not None:
            raise self.committed_error
        return [TopicPartition(*TP, self.stored[0], self.stored[1])]

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> list[Any]:
        for tp in offsets:
            assert (tp.topic, tp.partition) == TP
            self.stored = (tp.offset, tp.metadata or "")
            self.commits.append(self.stored)
        return offsets

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(*TP)]

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float,
                              cached: bool = False) -> tuple[int, int]:
        return 0, -1

    def close(self) -> None: ...


class _ClickHouse:
    """A fake ClickHouse: ``refuse(token, rows)`` returns the exception to raise, if any."""

    def __init__(self, refuse: Callable[[str, int], Exception | None] = lambda t, n: None,
                 row_size: int = 0) -> None:
        self.refuse, self.row_size = refuse, row_size or len(_value()[1])
        self.tokens: list[str] = []
        self.rows = 0

    def raw_insert(self, table: str, columns: Any, body: bytes, settings: dict[str, Any],
                   fmt: str) -> None:
        token, rows = settings["insert_deduplication_token"], len(body) // self.row_size
        problem = self.refuse(token, rows)
        if problem is not None:
            raise problem
        self.tokens.append(token)
        self.rows += rows


def _loop_sink(broker: _Broker, ch: _ClickHouse, tmp_path: Path) -> Sink:
    settings = get_settings().model_copy(update={"kafka_topic": TP[0], "state_dir": tmp_path})
    return Sink(settings, ch=ch, consumer=broker,  # type: ignore[arg-type]
                dlq=_Producer(), schemas=_ours)  # type: ignore[arg-type]


def _ranges(tokens: list[str]) -> list[str]:
    return [token.split("/")[2] for token in tokens]


def test_stopping_while_clickhouse_fails_never_commits_past_what_went_in(
        tmp_path: Path) -> None:
    """Batch N [100, 200) is planned at 100, its insert keeps failing; batch N+1 [200, 350)
    waits; SIGTERM: the worker gives [100, 200) up, so N+1 must not be planned at 200."""
    broker = _Broker(offset=100)
    ch = _ClickHouse(lambda token, rows: OSError("connection refused")
                     if token.startswith("t/0/100-") else None)
    sink = _loop_sink(broker, ch, tmp_path)
    sink._on_assign(broker, [TopicPartition(*TP)])  # type: ignore[arg-type]
    sink._take(_events(range(100, 200)))  # type: ignore[arg-type]
    sink._hand_over()  # plan of N committed at 100; the worker retries its insert
    sink._take(_events(range(200, 350)))  # type: ignore[arg-type]
    sink.stop()  # SIGTERM
    sink.run()  # the final flush
    assert broker.commits[0] == (100, encode_plan([200]))
    assert all(offset <= 100 for offset, _ in broker.commits), broker.commits
    assert broker.stored[0] == 100 and 200 in decode_plan(broker.stored[1])
    assert ch.rows == 0


def test_commits_carry_the_pending_cuts_so_a_second_replay_cuts_the_same(
        tmp_path: Path) -> None:
    """A replayed plan [105, 112] from 100: the commits after [100, 105) keep 112."""
    first = _Broker(offset=100, metadata=encode_plan([105, 112]))
    sink = _loop_sink(first, _ClickHouse(), tmp_path)
    sink._on_assign(first, [TopicPartition(*TP)])  # type: ignore[arg-type]
    sink._take(_events(range(100, 108)))  # type: ignore[arg-type]
    sink._hand_over(wait=True)  # [100, 105) goes in; [105, 108) waits for its cut at 112
    assert decode_plan(first.commits[0][1]) == [105, 112]  # the plan
    assert first.stored == (105, encode_plan([112]))  # the end, with the cut still ahead
    # the sink crashes here; its successor replays from 105 with the same cut
    second = _Broker(*first.stored)
    ch = _ClickHouse()
    again = _loop_sink(second, ch, tmp_path)
    again._on_assign(second, [TopicPartition(*TP)])  # type: ignore[arg-type]
    again._take(_events(range(105, 115)))  # type: ignore[arg-type]
    again._hand_over(wait=True)
    assert _ranges(ch.tokens) == ["105-111", "112-114"]
    assert second.stored == (115, "")


@pytest.mark.parametrize("limit", ["messages", "bytes"])
def test_dead_letters_alone_fill_the_batch_and_throttle_the_consumer(
        limit: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every message is a dead letter and the inserter is stuck: fetching must stop."""
    size, per_fetch = (10, 1000) if limit == "messages" else (MAX_EVENT_BYTES + 1, 10)
    offsets = iter(range(10**9))

    def fetch(num: int) -> list[_Msg]:
        return [_Msg(next(offsets), b"k", b"x" * size) for _ in range(min(num, per_fetch))]

    broker = _Broker(offset=0, fetch=fetch)
    sink = _loop_sink(broker, _ClickHouse(), tmp_path)
    sink.backlog_rows, sink.backlog_bytes = 5_000, 4 * 1024 * 1024
    stuck: Future[dict[Any, tuple[int, int]]] = Future()
    sink._inflight = stuck
    throttled: list[tuple[int, int]] = []

    def throttle() -> None:
        throttled.append((sink.batch.messages, sink.batch.bytes))
        stuck.set_result({})
        sink.stop()

    def until() -> bool:
        if broker.consumed >= 50 and not stuck.done():
            stuck.set_result({})
        return broker.consumed >= 50

    monkeypatch.setattr(sink, "_throttle", throttle)
    monkeypatch.setattr(sink, "_due", lambda now: False)
    sink.run(until)
    assert throttled, f"never throttled; {broker.consumed} fetches"
    messages, size_held = throttled[0]
    assert messages <= sink.backlog_rows + per_fetch
    assert size_held <= sink.backlog_bytes + per_fetch * (size + 1)


def test_a_failing_committed_lookup_on_assign_stops_the_sink_cleanly(tmp_path: Path) -> None:
    broker = _Broker(offset=100, fetch=lambda num: _events(range(100, 110)))
    broker.committed_error = KafkaException(KafkaError(KafkaError._TIMED_OUT))
    sink = _loop_sink(broker, _ClickHouse(), tmp_path)
    sink.assign_retry_delay = 0.01
    with pytest.raises(SinkError, match="committed offsets"):
        sink.run()
    assert broker.committed_calls == sink.assign_attempts
    assert broker.commits == []


def test_a_block_over_the_memory_limit_is_inserted_in_halves(tmp_path: Path) -> None:
    tried: set[str] = set()
    sink: Sink

    def refuse(token: str, rows: int) -> Exception | None:
        if token in tried:  # the same block again: stop, or this test would retry forever
            sink.stop()
        tried.add(token)
        if rows > 8:
            return DatabaseError("Code: 241. DB::Exception: Memory limit (for query) exceeded",
                                 code=241)
        return None

    ch = _ClickHouse(refuse)
    broker = _Broker(offset=0)
    sink = _loop_sink(broker, ch, tmp_path)
    sink._on_assign(broker, [TopicPartition(*TP)])  # type: ignore[arg-type]
    sink._take(_events(range(0, 32)))  # type: ignore[arg-type]
    segments = sink.batch.take_ready(lambda tp: False)
    assert sink.inserter.insert(segments) == {TP: (32, sink.shared.epochs[TP])}
    assert ch.rows == 32 and len(ch.tokens) == 4
    assert not segments[0].dead


def test_a_single_row_over_the_memory_limit_is_retried(tmp_path: Path) -> None:
    refusals = iter([DatabaseError("Code: 241. Memory limit (total) exceeded", code=241)])
    ch = _ClickHouse(lambda token, rows: next(refusals, None))
    broker = _Broker(offset=0)
    sink = _loop_sink(broker, ch, tmp_path)
    sink._on_assign(broker, [TopicPartition(*TP)])  # type: ignore[arg-type]
    sink._take(_events(range(0, 1)))  # type: ignore[arg-type]
    ready = sink.batch.take_ready(lambda tp: False)
    assert sink.inserter.insert(ready) == {TP: (1, sink.shared.epochs[TP])}
    assert ch.rows == 1
