"""Kafka → ClickHouse sink: the native stack's counterpart of Kafka Connect's ClickHouse sink.

A consumer group on the event topic hands the raw Confluent-framed values to ClickHouse, which
decodes them itself (``INSERT … FORMAT AvroConfluent``, writer schemas from the registry).
Python only pre-checks a few bytes per message (:func:`etar.sink.batch.precheck`; its fast
path is :meth:`etar.sink.batch.Batch.take`).

Pipeline: the main thread consumes and batches while one worker thread inserts the previous
batch (a hand-over queue of one). Fetches are large (a backlog arrives in few round trips) and
a message that looks like the events already accepted is batched in a few operations. A batch
is cut into segments, one per partition, each inserted as a block with a deduplication token
(see :mod:`etar.sink.batch`). The main thread commits the plan (where the segments end, as
offset metadata) and hands the segments over; the worker inserts them and waits until their
dead letters are acknowledged; the main thread then commits their end offsets (with the next
plan when one is due). Only the main thread calls the consumer: confluent-kafka serialises
calls from several threads, and a commit from the worker waited seconds behind ``consume()``. A
crash or a rebalance replays at most the uncommitted segments, cut at the same offsets, which
ClickHouse then drops (``non_replicated_deduplication_window`` on the table); the
ReplacingMergeTree on event_id stays as a second line.

Bad input: a message that is not a valid event goes unchanged to the dead-letter topic with
Kafka Connect's error headers. When ClickHouse refuses a block for its data, the block is
split around the refused row (or in halves) until the poison is alone; a block too big (too
many minute partitions, or over the memory limit) is inserted in halves. Connection errors and
timeouts are retried with capped backoff; an error retrying cannot fix (no table, unknown
column) stops the sink without committing.

Commits never run ahead of ClickHouse: a plan is committed at the partition's last committed
(or just finished) end, every commit carries the partition's pending cuts (so a second crash
replays the same segments), and a partition whose insert was abandoned because the sink stops
is not handed over again (a restart replays it from its last commit).

Rebalances (cooperative): ``on_revoke`` waits for the insert in flight (which commits what it
flushed) and drops the rest of the revoked partitions' batch; ``on_lost`` drops it without
committing anything.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import partial
from itertools import count
from pathlib import Path
from types import FrameType
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import (
    ClickHouseError,
    InterfaceError,
    NotSupportedError,
    ProgrammingError,
)
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.schema_registry.error import SchemaRegistryError

from etar import topics
from etar.config import Settings, get_settings
from etar.events.event import load_schema_str
from etar.events.serde import registry_client
from etar.sink.batch import (
    MEMORY_LIMIT_EXCEEDED,
    BadData,
    Batch,
    Failure,
    KnownSchemas,
    Prechecker,
    Segment,
    SinkError,
    TooManyPartitions,
    TopicPartitionKey,
    classify,
    decode_plan,
    encode_plan,
    failing_row,
    isolate,
    wire_info,
)
from etar.sink.dead_letters import DeadLetters
from etar.warehouse import table as warehouse

log = logging.getLogger(__name__)

BACKLOG_ROWS = 100_000
"""While the inserter is busy a batch grows up to this many messages (or sink_batch_rows)."""
BACKLOG_BYTES = 64 * 1024 * 1024
"""… and up to this many bytes of keys and values (dead letters included)."""
FETCH_PARTITION_BYTES = 8 * 1024 * 1024
"""How much of one partition a fetch brings at most (a backlog drains in fewer round trips)."""
DEAD_LETTER_TIMEOUT = 60.0
DEAD_LETTER_MAX_BYTES = 64 * 1024 * 1024
"""The dead-letter producer's own limit; the topic's (``max.message.bytes``) decides first."""
_MAX_BACKOFF = 30.0


@dataclass
class Progress:
    """What the sink reports in its log and to ``etar stack status``."""

    rows: int = 0
    dead_letters: int = 0
    replaced: int = 0
    """Dead letters too large for their topic, written as a record of their coordinates."""
    batches: int = 0
    lag: int = 0
    rows_per_s: float = 0.0
    committed: dict[str, int] = field(default_factory=dict)
    updated: float = 0.0

    def line(self) -> str:
        return (f"rows={self.rows} rows_per_s={self.rows_per_s:.0f} lag={self.lag} "
                f"dead_letters={self.dead_letters} batches={self.batches}"
                + (f" replaced_dead_letters={self.replaced}" if self.replaced else ""))


def progress_path(settings: Settings) -> Path:
    """One file per sink instance: two instances of a group never write the same file (nor
    the same temporary file, which one's rename would take from under the other)."""
    instance = f"-{settings.sink_instance}" if settings.sink_instance else ""
    return settings.state_dir / f"sink-{settings.sink_group_id}{instance}.json"


def read_progress(settings: Settings) -> Progress | None:
    """The running sink's last reported progress, if any."""
    try:
        return Progress(**json.loads(progress_path(settings).read_text()))
    except (OSError, ValueError, TypeError):
        return None


class _Abandoned(Exception):
    """The segment's partition is no longer ours, or the sink stops: leave it uncommitted."""


def _short(exc: BaseException) -> str:
    """ClickHouse's message without the driver's wrapping and the server version."""
    text = str(exc)
    text = text.split("server response: ", 1)[-1]
    return text.split(" (version ", 1)[0].strip()


def insert_failure(exc: BaseException) -> Failure:
    """How to react to an exception from a ClickHouse insert."""
    if isinstance(exc, ProgrammingError | InterfaceError | NotSupportedError):
        return Failure.PERMANENT  # the client refused the call itself
    if isinstance(exc, ClickHouseError):
        return classify(getattr(exc, "code", None), str(exc))
    return Failure.TRANSIENT  # OSError and the like: the connection


@dataclass
class Shared:
    """What the sink's two threads share, and who writes it.

    The main thread alone calls the consumer; ``epochs`` changes only in its rebalance
    callbacks (a revocation first waits for the insert in flight). The insert thread reads
    ``epochs`` to drop what is no longer ours, and adds to ``abandoned`` and to the counters of
    ``progress`` (rows, dead letters, batches); the main thread reads both between batches and
    writes the rest of ``progress``. ``stopping`` is set once, by whoever stops the sink.
    """

    epochs: dict[TopicPartitionKey, int] = field(default_factory=dict)
    """Partition → the epoch of its current assignment; absent: not ours."""
    abandoned: set[tuple[TopicPartitionKey, int]] = field(default_factory=set)
    """(partition, epoch) whose insert the worker gave up: never handed over again."""
    stopping: threading.Event = field(default_factory=threading.Event)
    progress: Progress = field(default_factory=Progress)

    def owned(self, segment: Segment) -> bool:
        return self.epochs.get(segment.tp) == segment.epoch


class Inserter:
    """The insert thread's part: segments into ClickHouse (retried, poison isolated), their
    dead letters sent and acknowledged; it never touches the consumer."""

    def __init__(self, settings: Settings, ch: Client, dead_letters: DeadLetters,
                 shared: Shared) -> None:
        self.settings = settings
        self.ch = ch
        self.dead_letters = dead_letters
        self.shared = shared
        self.insert_settings: dict[str, Any] = {
            "format_avro_schema_registry_url": settings.schema_registry_url,
            "insert_deduplicate": 1, "async_insert": 0}

    def _insert(self, segment: Segment, lo: int, hi: int) -> None:
        """Insert rows ``lo:hi`` of the segment, retrying what is transient."""
        body = segment.body(lo, hi)
        settings = {**self.insert_settings,
                    "insert_deduplication_token": segment.token(lo, hi, body)}
        delay = 0.5
        while True:
            if not self.shared.owned(segment):
                raise _Abandoned
            try:
                began = time.perf_counter()
                self.ch.raw_insert(self.settings.clickhouse_table, warehouse.COLUMNS, body,
                                   settings=settings, fmt="AvroConfluent")
                log.debug("inserted %d rows of %s[%d] in %.3fs", hi - lo, segment.topic,
                          segment.partition, time.perf_counter() - began)
                return
            except Exception as exc:
                kind = insert_failure(exc)
                if kind is Failure.BAD_DATA:
                    raise BadData(f"ClickHouse refused the row: {_short(exc)}",
                                  failing_row(str(exc))) from None
                if kind is Failure.SPLIT and (
                        hi - lo > 1 or getattr(exc, "code", None) != MEMORY_LIMIT_EXCEEDED):
                    raise TooManyPartitions from None  # (one row over memory: the server is)
                if kind is Failure.PERMANENT:
                    raise SinkError(f"ClickHouse refused the insert into "
                                    f"{self.settings.clickhouse_table!r} for a reason a retry "
                                    f"cannot fix: {_short(exc)}") from exc
                if self.shared.stopping.is_set():
                    raise _Abandoned from exc
                log.warning("insert of %d rows of %s[%d] failed (%s); retrying in %.1fs",
                            hi - lo, segment.topic, segment.partition, _short(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)

    def insert(self, segments: list[Segment]) -> dict[TopicPartitionKey, tuple[int, int]]:
        """Insert the segments and send their dead letters (the worker's part).

        Returns ``{partition: (end offset, epoch)}`` for the partitions whose segments all
        went in and whose dead letters were acknowledged: what may be committed now.
        """
        began = time.perf_counter()
        done: list[Segment] = []
        gone: set[TopicPartitionKey] = set()
        rows = 0
        for segment in segments:
            if segment.tp in gone:
                continue
            try:
                poison = isolate(len(segment.values), partial(self._insert, segment))
            except _Abandoned:
                gone.add(segment.tp)
                continue
            for index, reason in poison:
                segment.reject(index, f"{reason} ({wire_info(segment.values[index])})")
            rows += len(segment.values) - len(poison)
            done.append(segment)
        done = [s for s in done if s.tp not in gone]
        self.shared.abandoned.update((s.tp, s.epoch) for s in segments if s.tp in gone)
        inserted = time.perf_counter()
        letters = sorted((d for s in done for d in s.dead), key=lambda d: (d.partition, d.offset))
        if letters:
            self.dead_letters.send(letters)
            self.dead_letters.confirm(DEAD_LETTER_TIMEOUT)
        progress = self.shared.progress
        progress.rows += rows
        progress.dead_letters += len(letters)
        progress.replaced = self.dead_letters.replaced
        progress.batches += 1
        log.debug("inserted %d rows of %d segments in %.3fs, %d dead letters in %.3fs", rows,
                  len(done), inserted - began, len(letters), time.perf_counter() - inserted)
        return {s.tp: (s.end, s.epoch) for s in done}


class Sink:
    """Consume → pre-check → batch (the main thread), while the :class:`Inserter` inserts the
    previous batch on a worker thread; the main thread commits. Shared state: :class:`Shared`."""

    assign_attempts = 3
    """Tries at reading the committed offsets of assigned partitions before the sink stops."""
    assign_retry_delay = 1.0

    def __init__(self, settings: Settings | None = None, ch: Client | None = None,
                 consumer: Consumer | None = None, dlq: Producer | None = None,
                 schemas: Callable[[int], str | None] | None = None) -> None:
        self.settings = settings or get_settings()
        instance = self.settings.sink_instance
        self.consumer = consumer or topics.consumer(self.settings, self.settings.sink_group_id, {
            **({"client.id": f"etar-sink-{instance}"} if instance else {}),
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10_000,  # a crashed sink's partitions move on within 10 s
            "heartbeat.interval.ms": 1_000,
            "fetch.wait.max.ms": 100,  # a quiet topic answers fast (latency)
            # A backlog: 1 MiB per partition and fetch (the default) delivered ~130k msg/s
            # here, 8 MiB ~220k (the prefetch queue stays bounded by queued.max.messages.kbytes)
            "max.partition.fetch.bytes": FETCH_PARTITION_BYTES,
            "fetch.max.bytes": 8 * FETCH_PARTITION_BYTES,
        })
        # Compressed: a value the event topic took compressed fits the dead-letter topic too
        # (whose limit is aligned with the event topic's); one that still does not is replaced
        # by its coordinates (etar.sink.dead_letters).
        producer = dlq or Producer({"bootstrap.servers": self.settings.kafka_bootstrap_servers,
                                    "enable.idempotence": True, "acks": "all",
                                    "compression.type": "zstd",
                                    "message.max.bytes": DEAD_LETTER_MAX_BYTES,
                                    "message.timeout.ms": int(DEAD_LETTER_TIMEOUT * 1000)})
        self.shared = Shared()
        self.inserter = Inserter(self.settings, ch or warehouse.client(self.settings),
                                 DeadLetters(producer, self.settings.kafka_dlq_topic),
                                 self.shared)
        if schemas is None:
            self._registry = registry_client(self.settings)
            schemas = KnownSchemas(self._fetch_schema, load_schema_str())
        self.precheck = Prechecker(schemas)
        # An idle inserter takes a batch this old already; ``sink_batch_seconds`` is the longest.
        self.idle_flush_seconds = min(self.settings.sink_idle_flush_seconds,
                                      self.settings.sink_batch_seconds)
        self.backlog_rows = max(self.settings.sink_batch_rows, BACKLOG_ROWS)
        self.backlog_bytes = BACKLOG_BYTES
        self.batch = Batch()
        self._epochs = count(1)
        self._cuts: dict[TopicPartitionKey, list[int]] = {}
        self._committed: dict[TopicPartitionKey, int] = {}
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="sink-insert")
        self._inflight: Future[dict[TopicPartitionKey, tuple[int, int]]] | None = None
        self._finished: dict[TopicPartitionKey, tuple[int, int]] = {}
        self._inflight_ends: dict[TopicPartitionKey, list[int]] = {}
        self._failure: SinkError | None = None
        self._running = True
        self._paused = False
        self._window = (time.monotonic(), 0)

    # --- pre-check -------------------------------------------------------------------
    def _fetch_schema(self, schema_id: int) -> str | None:
        """The registered schema's text; None if the registry does not know the id."""
        delay = 0.5
        while True:
            try:
                return str(self._registry.get_schema(schema_id).schema_str)
            except SchemaRegistryError as exc:
                if exc.http_status_code == 404:
                    return None
                problem: Exception = exc
            except Exception as exc:  # the registry is unreachable: decide nothing yet
                problem = exc
            if self.shared.stopping.is_set():
                raise SinkError(f"the schema registry did not answer for id {schema_id}: "
                                f"{problem}")
            log.warning("schema registry: %s; asking again in %.1fs", problem, delay)
            time.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)

    def _take(self, messages: list[Message]) -> None:
        errors = self.batch.take(self.settings.kafka_topic, messages, self.shared.epochs,
                                 self._cuts, self.precheck, time.monotonic())
        for error in errors:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", error)

    # --- commit (main thread) ----------------------------------------------------------
    def _commit(self, offsets: dict[TopicPartitionKey, tuple[int, str]],
                epochs: dict[TopicPartitionKey, int]) -> set[TopicPartitionKey]:
        """Commit synchronously; the partitions that are no longer ours are returned.

        A partition still ours that cannot be committed stops the sink (a restart replays it).
        """
        pending = dict(offsets)
        delay = 0.2
        for _attempt in range(6):
            pending = {tp: v for tp, v in pending.items()
                       if self.shared.epochs.get(tp) == epochs[tp]}
            if not pending:
                break
            tps = [TopicPartition(t, p, o, metadata) for (t, p), (o, metadata) in pending.items()]
            try:
                result = self.consumer.commit(offsets=tps, asynchronous=False) or []
                failed = {(r.topic, r.partition): r.error for r in result if r.error}
            except KafkaException as exc:
                failed = {tp: exc.args[0] for tp in pending}
            pending = {tp: v for tp, v in pending.items() if tp in failed}
            if not pending:
                break
            log.warning("commit of %s failed (%s); retrying in %.1fs", sorted(pending),
                        next(iter(failed.values())), delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        else:
            if any(self.shared.epochs.get(tp) == epochs[tp] for tp in pending):
                raise SinkError(f"cannot commit offsets of {sorted(pending)}; stopping so a "
                                "restart replays them")
        return {tp for tp in offsets if self.shared.epochs.get(tp) != epochs[tp]}

    # --- hand-over (main thread: it alone calls the consumer) --------------------------
    def _reap(self) -> None:
        """Take the worker's result once its batch is done (raising what it raised)."""
        if self._inflight is not None and self._inflight.done():
            inflight, self._inflight = self._inflight, None
            self._inflight_ends = {}
            self._finished.update(inflight.result())

    def _pending_cuts(self, tp: TopicPartitionKey, after: int) -> list[int]:
        """The partition's cuts beyond ``after`` that a replay must reproduce: the ends of its
        segments in flight and of its sealed ones, and the planned cuts not yet reached."""
        cuts = {*self._inflight_ends.get(tp, ()), *self.batch.sealed_ends(tp),
                *self._cuts.get(tp, ())}
        return sorted(c for c in cuts if c > after)

    def _metadata(self, tp: TopicPartitionKey, offset: int) -> str:
        cuts = self._pending_cuts(tp, offset)
        return encode_plan(cuts) if cuts else ""

    def _commit_finished(self, plans: dict[TopicPartitionKey, tuple[int, str, int]]
                         | None = None) -> set[TopicPartitionKey]:
        """One synchronous commit: the ends of what went in, and the plans of what goes next.

        Returns the planned partitions that are not ours any more.
        """
        offsets = {tp: (end, self._metadata(tp, end), epoch)
                   for tp, (end, epoch) in self._finished.items()}
        offsets.update(plans or {})
        self._finished = {}
        if not offsets:
            return set()
        gone = self._commit({tp: (o, m) for tp, (o, m, _) in offsets.items()},
                            {tp: e for tp, (_, _, e) in offsets.items()})
        for tp, (offset, _, _) in offsets.items():
            if tp not in gone:  # a plan's offset too: everything before it is in ClickHouse
                self._committed[tp] = offset
        return gone

    def _hand_over(self, wait: bool = False) -> None:
        """Commit the plan of the ready segments (and what finished), then insert them."""
        age = time.monotonic() - (self.batch.started or time.monotonic())
        segments = [s for s in self.batch.take_ready(lambda tp: bool(self._cuts.get(tp)))
                    if self.shared.owned(s)]
        by_tp: dict[TopicPartitionKey, list[Segment]] = {}
        for segment in segments:
            by_tp.setdefault(segment.tp, []).append(segment)
        plans: dict[TopicPartitionKey, tuple[int, str, int]] = {}
        for tp, group in list(by_tp.items()):
            epoch = group[0].epoch
            # what came before is not in: a restart replays
            if (tp, epoch) in self.shared.abandoned:
                log.warning("%s[%d]: an earlier insert was abandoned; not inserting [%d, %d)",
                            tp[0], tp[1], group[0].start, group[-1].end)
                del by_tp[tp]
                continue
            finished = self._finished.get(tp)
            start = finished[0] if finished else self._committed.get(tp, group[0].start)
            start = min(start, group[0].start)  # a plan never runs ahead of ClickHouse
            ends = [s.end for s in group]
            plans[tp] = (start, encode_plan([*ends, *self._pending_cuts(tp, ends[-1])]), epoch)
        gone = self._commit_finished(plans)
        segments = [s for s in segments if s.tp in by_tp and s.tp not in gone]
        if not segments:
            return
        log.debug("hand-over of %d rows in %d segments (batch age %.3fs)",
                  sum(len(s.values) for s in segments), len(segments), age)
        if wait:
            self._finished.update(self.inserter.insert(segments))
            self._commit_finished()
        else:
            self._inflight_ends = {tp: [s.end for s in group] for tp, group in by_tp.items()}
            self._inflight = self._worker.submit(self.inserter.insert, segments)

    def _wait_worker(self, timeout: float | None) -> bool:
        """Wait for the batch in flight (its errors stay for :meth:`_reap`); True when idle."""
        if self._inflight is None:
            return True
        try:
            self._inflight.exception(timeout)
        except FutureTimeout:
            return False
        return True

    def _due(self, now: float) -> bool:
        batch = self.batch
        if not batch.messages or batch.started is None:
            return False
        return (batch.messages >= self.settings.sink_batch_rows
                or batch.bytes >= self.backlog_bytes
                or now - batch.started >= self.idle_flush_seconds)

    def _full(self) -> bool:
        """The batch holds as much as may wait (messages, dead letters too, or bytes)."""
        return (self.batch.messages >= self.backlog_rows
                or self.batch.bytes >= self.backlog_bytes)

    def _throttle(self) -> None:
        """The batch is full and the worker busy: wait, pausing the fetch if it lasts."""
        waited = time.monotonic()
        while not self._wait_worker(0.2):
            if not self._paused and time.monotonic() - waited > 5:
                self.consumer.pause(self.consumer.assignment())  # the consumer stays alive
                self._paused = True
                log.warning("the inserter is behind; fetching paused")
            if self._paused:
                self._take(self.consumer.consume(1000, timeout=0.5))  # serves rebalances
            if not self._running:
                return
        if self._paused:
            self.consumer.resume(self.consumer.assignment())
            self._paused = False

    # --- rebalance -------------------------------------------------------------------
    def _committed_offsets(self, consumer: Consumer,
                           partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The partitions' committed offsets and plans, asked a few times; SinkError if not."""
        problem: object = None
        for attempt in range(self.assign_attempts):
            if attempt:
                time.sleep(self.assign_retry_delay)
            try:
                committed = consumer.committed(partitions, timeout=10)
            except Exception as exc:  # KafkaException (timeout, coordinator), or worse
                problem = exc
            else:
                failed = [tp for tp in committed if tp.error]
                if not failed:
                    return list(committed)
                problem = f"{failed[0].topic}[{failed[0].partition}]: {failed[0].error}"
            log.warning("reading the committed offsets of %s failed (%s)",
                        [(tp.topic, tp.partition) for tp in partitions], problem)
        raise SinkError(f"cannot read the committed offsets and plans of the assigned "
                        f"partitions after {self.assign_attempts} tries: {problem}; stopping "
                        "without committing (a restart replays them)")

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Read each partition's committed offset and plan; never raises out of consume()."""
        if not partitions or self._failure is not None:
            return
        try:
            committed = self._committed_offsets(consumer, partitions)
        except SinkError as exc:
            log.error("%s", exc)
            self._failure = exc
            self.stop()
            return
        for tp in committed:
            key = (tp.topic, tp.partition)
            self.shared.epochs[key] = next(self._epochs)
            self._cuts[key] = [c for c in decode_plan(tp.metadata) if c > tp.offset]
            if tp.offset >= 0:
                self._committed[key] = tp.offset
            if self._cuts[key]:
                log.info("%s[%d] replays a planned insert: cuts at %s", tp.topic, tp.partition,
                         self._cuts[key])

    def _forget(self, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        for key in keys:
            self.shared.epochs.pop(key, None)
            self._cuts.pop(key, None)
            self._committed.pop(key, None)
            self._finished.pop(key, None)
            self._inflight_ends.pop(key, None)
        self.batch.drop(keys)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Let the insert in flight finish, commit what went in, forget the rest."""
        try:
            if not self._wait_worker(60):
                log.warning("the insert in flight did not finish; its revoked partitions "
                            "are left uncommitted")
            elif self._inflight is not None and self._inflight.exception() is None:
                self._reap()  # (a failed worker's error stays for the main loop)
            self._commit_finished()
        except Exception:  # never out of consume(): the next owner replays, deduplicated
            log.exception("committing before revoking %s", partitions)
        finally:
            self._forget(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Lost partitions are another member's already: commit nothing, forget them."""
        try:
            log.warning("partitions lost: %s", [(tp.topic, tp.partition) for tp in partitions])
            self._forget(partitions)
        except Exception:  # never out of consume()
            log.exception("losing %s", partitions)

    # --- progress --------------------------------------------------------------------
    def _lag(self) -> int:
        """Messages on the broker not yet committed (in ClickHouse) for our partitions."""
        total = 0
        for key in list(self.shared.epochs):
            partition = TopicPartition(*key)
            try:
                _, high = self.consumer.get_watermark_offsets(partition, timeout=1, cached=True)
                if high < 0:
                    _, high = self.consumer.get_watermark_offsets(partition, timeout=1)
            except KafkaException:
                continue
            if high >= 0:
                total += max(0, high - max(self._committed.get(key, 0), 0))
        return total

    def report(self) -> None:
        progress = self.shared.progress
        started, rows = self._window
        now = time.monotonic()
        progress.rows_per_s = (progress.rows - rows) / max(now - started, 1e-9)
        self._window = (now, progress.rows)
        progress.lag = self._lag()
        progress.committed = {f"{t}[{p}]": o for (t, p), o in self._committed.items()}
        progress.updated = time.time()
        path = progress_path(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(vars(progress)))
        tmp.replace(path)
        log.info("progress %s committed=%s", progress.line(), progress.committed)

    # --- loop ------------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        self._running = False
        self.shared.stopping.set()

    def run(self, until: Callable[[], bool] | None = None, report_every: float = 5.0) -> None:
        """Consume until stopped (SIGTERM/SIGINT or ``until()``), then flush and close."""
        self.consumer.subscribe([self.settings.kafka_topic], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)
        last_report = time.monotonic()
        log.info("sink consuming %s into %s (AvroConfluent; batches of %d rows / %.2fs)",
                 self.settings.kafka_topic, self.settings.clickhouse_table,
                 self.settings.sink_batch_rows, self.idle_flush_seconds)
        try:
            while self._running and not (until and until()):
                self._reap()
                now = time.monotonic()
                if self._inflight is None:
                    if self._due(now):
                        self._hand_over()
                    elif self._finished:
                        self._commit_finished()
                if self._full() and self._inflight is not None:
                    self._throttle()
                    continue
                room = max(1, min(5000, self.backlog_rows - self.batch.messages))
                self._take(self.consumer.consume(room, timeout=0.05 if self.batch.messages
                                                 else 0.2))
                if now - last_report >= report_every:
                    self.report()
                    last_report = now
            if self._failure is not None:
                raise self._failure
            self._wait_worker(None)
            self._reap()
            self._hand_over(wait=True)
            self._commit_finished()
            self.report()
        finally:
            self.shared.stopping.set()
            self.consumer.close()
            self._worker.shutdown(wait=True)
            self.inserter.dead_letters.producer.flush(10)


def main() -> None:
    """Run the sink until SIGTERM / Ctrl-C (``etar sink``, ``python -m etar.sink.consumer``).

    ``ETAR_SINK_LOG_LEVEL=DEBUG`` logs every insert and hand-over with its timing. A failure
    ends the log with one ``error: …`` line and exit code 1 (``ETAR_DEBUG=1``: the traceback).
    """
    logging.basicConfig(level=os.environ.get("ETAR_SINK_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("httpx", "httpx2", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        sink = Sink()

        def _stop(signum: int, frame: FrameType | None) -> None:
            sink.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        sink.run()
    except Exception as exc:
        if os.environ.get("ETAR_DEBUG"):
            raise
        from etar.orchestration.failures import describe

        print(f"error: sink stopped: {describe(exc)}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None

if __name__ == "__main__":
    main()
