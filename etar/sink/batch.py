"""The sink's pure logic: pre-checking messages, segments, dedup tokens, commit plans, poison.

ClickHouse decodes the Avro (``INSERT … FORMAT AvroConfluent``); Python only looks at a few
bytes of each message to keep what ClickHouse would reject for the wrong reason (another
schema, a key that is not the event's user) out of the batch.

A *segment* is a run of consecutive offsets of one partition. It is inserted as one block whose
ClickHouse deduplication token names the partition, its first and last offsets and a checksum
of the bytes, so inserting the same segment twice stores it once. Before a segment is inserted,
its end offset is committed to Kafka as the *plan* (offset metadata beside the unchanged
committed offset): whoever replays the partition cuts its segments at the same offsets, so a
replay produces the same tokens and doubles nothing.
"""

from __future__ import annotations

import binascii
import json
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from etar.errors import EtarError

MAX_EVENT_BYTES = 256 * 1024
"""A value above this is no event (a real one is a few hundred bytes): it is dead-lettered."""
UUID_KEY_SIZE = 16
_UUID_STRING = 0x48
"""Avro's zig-zag varint for a 36-byte string: how event_id and user_id (text UUIDs) begin."""
_USER_ID = slice(43, 79)
"""user_id's text in a value: 5 framing bytes, event_id (1 + 36), user_id's length byte."""
PLAN_PREFIX = "etar-sink/1 cuts="

TopicPartitionKey = tuple[str, int]
Headers = Any
"""A message's headers as confluent-kafka gives them (None, or a list of pairs)."""


class SinkError(EtarError):
    """The sink cannot go on without losing or doubling data (it stops; nothing is committed)."""


def wire_info(value: bytes | None) -> str:
    """What the value's framing says, for the dead-letter reason."""
    if not value:
        return "empty value"
    if len(value) >= 5 and value[0] == 0:
        return f"Confluent framing, schema id {int.from_bytes(value[1:5], 'big')}"
    return f"no Confluent framing (first byte {value[0]:#04x}), {len(value)} bytes"


def precheck(key: bytes | None, value: bytes | None,
             schema_problem: Callable[[int], str | None]) -> str | None:
    """Why this message is not a valid event, as far as a few bytes tell; None if it may be.

    Checks, cheapest first: a value at all (tombstone), its size, the Confluent framing, that
    the schema id is the event schema's, the key's size, and that the key is the event's
    user_id. Everything else (a truncated body, a bad enum) is found by ClickHouse.
    """
    if value is None:
        return "tombstone: the value is null"
    size = len(value)
    if size > MAX_EVENT_BYTES:
        return f"oversized: {size} bytes, an event has at most {MAX_EVENT_BYTES}"
    if size < 6 or value[0] != 0:
        return f"not Confluent-framed Avro ({wire_info(value)})"
    problem = schema_problem(int.from_bytes(value[1:5], "big"))
    if problem is not None:
        return problem
    if key is None or len(key) != UUID_KEY_SIZE:
        return (f"bad key: a UUID key has {UUID_KEY_SIZE} bytes, got "
                f"{'none' if key is None else len(key)} ({wire_info(value)})")
    if size < _USER_ID.stop or value[5] != _UUID_STRING or value[42] != _UUID_STRING:
        return f"decode error: event_id and user_id are not UUID strings ({wire_info(value)})"
    if value[_USER_ID].replace(b"-", b"").lower() != binascii.hexlify(key):
        return (f"bad key: {key.hex()} is not the event's user_id "
                f"{value[_USER_ID].decode(errors='replace')} ({wire_info(value)})")
    return None


class Prechecker:
    """:func:`precheck` remembering the framings (magic byte and schema id) found valid, so
    that a message framed like those needs only the key checks (:meth:`Batch.take`)."""

    def __init__(self, schema_problem: Callable[[int], str | None]) -> None:
        self.schema_problem = schema_problem
        self.framings: set[bytes] = set()
        """The first 5 bytes of values whose schema id is the event schema's."""

    def __call__(self, key: bytes | None, value: bytes | None) -> str | None:
        reason = precheck(key, value, self.schema_problem)
        if reason is None:
            assert value is not None
            self.framings.add(value[:5])
        return reason


def _shape(schema: Any) -> Any:
    """A parsed Avro schema without its documentation, for comparison."""
    if isinstance(schema, dict):
        return {k: _shape(v) for k, v in schema.items() if k != "doc"}
    if isinstance(schema, list):
        return [_shape(v) for v in schema]
    return schema


class KnownSchemas:
    """Which schema ids are the event schema; the registry is asked once per id.

    ``fetch(id)`` returns the registered schema's text, None when the registry does not know
    the id, and raises when the registry cannot be asked (then nothing is decided). Unknown ids
    are asked again next time: a registry that is catching up must not turn events into
    dead letters for good.
    """

    def __init__(self, fetch: Callable[[int], str | None], expected: str) -> None:
        self._fetch = fetch
        self._expected = _shape(json.loads(expected))
        self._verdicts: dict[int, str | None] = {}

    def __call__(self, schema_id: int) -> str | None:
        try:
            return self._verdicts[schema_id]
        except KeyError:
            pass
        text = self._fetch(schema_id)
        if text is None:
            return f"unknown schema id {schema_id}: the registry does not know it"
        try:
            schema = json.loads(text)
        except ValueError:
            schema = text
        if _shape(schema) == self._expected:
            verdict = None
        else:
            name = schema.get("name", "?") if isinstance(schema, dict) else schema
            verdict = f"schema id {schema_id} is another schema ({name}), not the event's"
        self._verdicts[schema_id] = verdict
        return verdict


class ConsumedMessage(Protocol):
    """What :meth:`Batch.take` reads of a consumed message (confluent-kafka's ``Message``)."""

    def error(self) -> Any: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def headers(self) -> Headers: ...

    def timestamp(self) -> tuple[int, int]: ...


@dataclass
class DeadLetter:
    """A message that goes to the dead-letter topic unchanged, and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    reason: str
    timestamp: int | None = None
    """The message's Kafka timestamp (ms), kept for letters refused before the insert."""


@dataclass(eq=False)
class Segment:
    """Consecutive offsets of one partition, inserted as one deduplicated block."""

    topic: str
    partition: int
    epoch: int
    start: int
    end: int
    offsets: list[int] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    headers: list[Headers] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    sealed: bool = False

    @property
    def tp(self) -> TopicPartitionKey:
        return (self.topic, self.partition)

    def token(self, lo: int, hi: int, body: bytes) -> str:
        """The dedup token of rows ``lo:hi``: partition, offsets and a checksum of the bytes."""
        return (f"{self.topic}/{self.partition}/{self.offsets[lo]}-{self.offsets[hi - 1]}/"
                f"{zlib.crc32(body):08x}")

    def body(self, lo: int, hi: int) -> bytes:
        """Rows ``lo:hi`` as ClickHouse's AvroConfluent input: the values, concatenated."""
        return b"".join(self.values[lo:hi])

    def reject(self, index: int, reason: str) -> None:
        """Turn accepted row ``index`` into a dead letter (ClickHouse refused it)."""
        self.dead.append(DeadLetter(self.topic, self.partition, self.offsets[index],
                                    self.keys[index], self.values[index], self.headers[index],
                                    reason))


def encode_plan(cuts: Iterable[int]) -> str:
    """Offset metadata naming where the segments being inserted end."""
    return PLAN_PREFIX + ",".join(str(c) for c in cuts)


def decode_plan(metadata: str | None) -> list[int]:
    """The cut offsets of a committed plan (empty for no plan or foreign metadata)."""
    if not metadata or not metadata.startswith(PLAN_PREFIX):
        return []
    try:
        return sorted(int(c) for c in metadata[len(PLAN_PREFIX):].split(",") if c)
    except ValueError:
        return []


class Batch:
    """Messages taken since the last hand-over, as segments per partition.

    Pending cuts (from a committed plan) seal a segment at exactly that offset; a segment that
    still waits for its cut stays out of :meth:`take_ready` so a replay reproduces it whole.
    """

    def __init__(self) -> None:
        self.segments: dict[TopicPartitionKey, list[Segment]] = {}
        self.messages = 0
        self.rows = 0
        self.bytes = 0
        """Keys and values of every message held, dead letters included (for backpressure)."""
        self.started: float | None = None

    def _open(self, tp: TopicPartitionKey, offset: int, epoch: int,
              cuts: list[int]) -> Segment:
        segments = self.segments.setdefault(tp, [])
        current = segments[-1] if segments and not segments[-1].sealed else None
        while cuts and cuts[0] <= offset:
            cut = cuts.pop(0)
            if current is not None and current.start < cut:
                current.sealed, current.end = True, cut
                current = None
        if current is None or current.epoch != epoch:
            current = Segment(tp[0], tp[1], epoch, offset, offset)
            segments.append(current)
        return current

    def add(self, tp: TopicPartitionKey, offset: int, epoch: int, cuts: list[int],
            key: bytes | None, value: bytes | None, headers: Headers,
            reason: str | None, now: float, timestamp: int | None = None) -> None:
        """Add one message: accepted (``reason`` None) or a dead letter."""
        segment = self._open(tp, offset, epoch, cuts)
        if reason is None:
            assert value is not None
            segment.offsets.append(offset)
            segment.values.append(value)
            segment.keys.append(key)
            segment.headers.append(headers)
            self.rows += 1
        else:
            segment.dead.append(DeadLetter(tp[0], tp[1], offset, key, value, headers, reason,
                                           timestamp))
        self.bytes += _size(key) + _size(value)
        segment.end = offset + 1
        if cuts and segment.end >= cuts[0]:
            segment.sealed, segment.end = True, cuts.pop(0)
        self.messages += 1
        if self.started is None:
            self.started = now

    def take(self, topic: str, messages: Iterable[ConsumedMessage],
             epochs: dict[TopicPartitionKey, int], cuts: dict[TopicPartitionKey, list[int]],
             check: Prechecker, now: float) -> list[Any]:
        """Add consumed messages of ``topic``; the errors they carried are returned.

        The hot path of a backlog, a few operations per message: a message whose framing
        ``check`` already knows, whose key is its user_id, and whose partition has no planned
        cut ahead is appended to its partition's open segment. Anything else goes through
        :func:`precheck` (by ``check``) and :meth:`add`. Partitions without an epoch (revoked
        meanwhile) are skipped: their next owner reads them.
        """
        errors: list[Any] = []
        framings, hexlify = check.framings, binascii.hexlify
        partition, epoch, tp = -1, None, (topic, -1)
        pending: list[int] = []
        segment: Segment | None = None
        rows = size = 0
        for message in messages:
            if message.error() is not None:
                errors.append(message.error())
                continue
            if message.partition() != partition:
                partition = message.partition() or 0
                tp = (topic, partition)
                epoch, segment = epochs.get(tp), None
                if epoch is not None:
                    pending = cuts.setdefault(tp, [])
            if epoch is None:
                continue
            key, value, offset = message.key(), message.value(), message.offset() or 0
            if (segment is not None and not pending and key is not None and value is not None
                    and len(key) == UUID_KEY_SIZE and value[:5] in framings
                    and _USER_ID.stop <= len(value) <= MAX_EVENT_BYTES
                    and value[5] == _UUID_STRING == value[42]
                    and value[_USER_ID].replace(b"-", b"") == hexlify(key)):
                segment.offsets.append(offset)
                segment.values.append(value)
                segment.keys.append(key)
                segment.headers.append(message.headers())
                segment.end = offset + 1
                rows += 1
                size += len(key) + len(value)
                continue
            reason = check(key, value)
            self.add(tp, offset, epoch, pending, key, value, message.headers(), reason, now,
                     message.timestamp()[1] if reason is not None else None)
            last = self.segments[tp][-1]
            segment = None if last.sealed else last
        if rows:
            self.rows += rows
            self.messages += rows
            self.bytes += size
            if self.started is None:
                self.started = now
        return errors

    def sealed_ends(self, tp: TopicPartitionKey) -> list[int]:
        """Where the partition's sealed segments still held end: planned cuts not yet used."""
        return [s.end for s in self.segments.get(tp, []) if s.sealed]

    def take_ready(self, waiting: Callable[[TopicPartitionKey], bool]) -> list[Segment]:
        """Remove and return every segment that may be inserted now.

        ``waiting(tp)`` says whether the partition still has a planned cut ahead: its open
        segment then stays until the cut is reached.
        """
        ready: list[Segment] = []
        for tp in list(self.segments):
            segments = self.segments[tp]
            last = segments[-1]
            if not last.sealed and waiting(tp):
                ready.extend(segments[:-1])
                self.segments[tp] = [last]
            else:
                ready.extend(segments)
                del self.segments[tp]
        self._recount()
        return ready

    def drop(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Forget the partitions' messages (revoked or lost: their next owner reads them)."""
        for tp in partitions:
            self.segments.pop(tp, None)
        self._recount()

    def _recount(self) -> None:
        segments = [s for group in self.segments.values() for s in group]
        self.rows = sum(len(s.values) for s in segments)
        self.messages = self.rows + sum(len(s.dead) for s in segments)
        self.bytes = sum(_size(k) + _size(v) for s in segments for k, v in zip(s.keys, s.values,
                                                                               strict=True))
        self.bytes += sum(_size(d.key) + _size(d.value) for s in segments for d in s.dead)
        if not segments:
            self.started = None


def _size(data: bytes | None) -> int:
    return len(data) if data else 0


class Failure(Enum):
    """How the sink reacts to a failed insert."""

    BAD_DATA = "bad data"  # some row is not a valid event: isolate it
    SPLIT = "split"  # the block is too big (minute partitions, memory): insert it in halves
    TRANSIENT = "transient"  # the service is unwell: retry the same block later
    PERMANENT = "permanent"  # the table or the setup is wrong: stop


_BAD_DATA_CODES = frozenset({
    6, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 131, 190, 376, 441})
"""CANNOT_PARSE_*, CANNOT_READ_ALL_DATA, TYPE_MISMATCH, ARGUMENT_OUT_OF_BOUND,
CANNOT_CONVERT_TYPE, INCORRECT_DATA, TOO_LARGE_STRING_SIZE, SIZES_OF_ARRAYS_DONT_MATCH,
CANNOT_PARSE_UUID, CANNOT_PARSE_IPV4…: a row that is not a valid event."""
MEMORY_LIMIT_EXCEEDED = 241
"""A block too big for the server's memory: it is split like one spanning too many partitions
(a single row refused so is retried as transient: the server itself is short of memory)."""
_TRANSIENT_CODES = frozenset({
    3, 159, 202, 209, 210, 242, 252, 319, 373, 394, 425, 999, 1000})
"""UNEXPECTED_END_OF_FILE, TIMEOUT_EXCEEDED, TOO_MANY_SIMULTANEOUS_QUERIES, SOCKET_TIMEOUT,
NETWORK_ERROR, TABLE_IS_READ_ONLY, TOO_MANY_PARTS (merges behind),
UNKNOWN_STATUS_OF_INSERT, SESSION_IS_LOCKED, QUERY_WAS_CANCELLED, SYSTEM_ERROR, KEEPER_EXCEPTION,
POCO_EXCEPTION: the service, not the data."""
_ROW = re.compile(r"\(at row (\d+)\)")


def classify(code: int | None, message: str) -> Failure:
    """The kind of an insert failure, from ClickHouse's exception code and text.

    ``code`` None: no ClickHouse exception (connection refused, timeout, HTTP 5xx) → transient.
    """
    if code is None:
        return Failure.TRANSIENT
    if code == 252 and "partitions for single INSERT block" in message:
        return Failure.SPLIT
    if code == MEMORY_LIMIT_EXCEEDED:
        return Failure.SPLIT
    if code in _BAD_DATA_CODES:
        return Failure.BAD_DATA
    if code == 1001 and "avro::" in message:  # the Avro library's own errors (e.g. EOF reached)
        return Failure.BAD_DATA
    if code == 86 and "/schemas/ids/" in message:  # ClickHouse asked the registry for the id
        return Failure.BAD_DATA if "404" in message else Failure.TRANSIENT
    if code in _TRANSIENT_CODES:
        return Failure.TRANSIENT
    return Failure.PERMANENT


def failing_row(message: str) -> int | None:
    """The 1-based row ClickHouse names in a parse error (``(at row 101)``), if any."""
    match = _ROW.search(message)
    return int(match.group(1)) if match else None


class BadData(Exception):
    """An insert of rows was refused for their content (raised by the insert callback)."""

    def __init__(self, reason: str, row: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.row = reason, row


class TooManyPartitions(Exception):
    """An insert is too big for one block: too many minute partitions, or too much memory
    (raised by the callback; the range is inserted in halves)."""


def isolate(count: int, insert: Callable[[int, int], None]) -> list[tuple[int, str]]:
    """Insert rows ``0:count`` by ranges, splitting a refused range until the poison is alone.

    ``insert(lo, hi)`` inserts rows ``lo:hi`` or raises :class:`BadData` (optionally naming the
    refused row within the range) or :class:`TooManyPartitions`. A refused range is split
    around the named row, else in halves; a single refused row is poison. The splits depend
    only on the rows, so a replay inserts the same ranges (the same dedup tokens).

    Returns the poison rows with ClickHouse's reasons, in row order.
    """
    poison: list[tuple[int, str]] = []
    stack: list[tuple[int, int]] = [(0, count)] if count else []
    while stack:
        lo, hi = stack.pop()
        try:
            insert(lo, hi)
            continue
        except TooManyPartitions:
            if hi - lo == 1:
                raise SinkError("one row spans too many partitions: impossible") from None
            mid = (lo + hi) // 2
            parts: Sequence[tuple[int, int]] = [(lo, mid), (mid, hi)]
        except BadData as refused:
            if hi - lo == 1:
                poison.append((lo, refused.reason))
                continue
            row = refused.row
            if row is not None and 1 <= row <= hi - lo:
                at = lo + row - 1
                parts = [(lo, at), (at, at + 1), (at + 1, hi)]
            else:
                mid = (lo + hi) // 2
                parts = [(lo, mid), (mid, hi)]
        stack.extend(reversed([(a, b) for a, b in parts if b > a]))
    return poison
