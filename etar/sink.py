"""Kafka → ClickHouse sink: the native stack's counterpart of Kafka Connect's ClickHouse sink.

A consumer group on the event topic decodes keys (etar's UUID key) and values (Avro through
the registry), validates them as events, and batches rows by size and time. A batch is
inserted grouped by minute, never more minute partitions per insert than ClickHouse's
``max_partitions_per_insert_block``; offsets are committed only after ClickHouse accepted
the whole batch, so a crash replays at most the uncommitted batch.

Duplicates: a replayed batch rarely has the same boundaries as the lost one (batches close on
time as well as size), so an insert deduplication token would not recognise it. The table is
a ReplacingMergeTree keyed on ``event_id`` instead: replayed rows collapse into the ones
already stored, and readers that need exact numbers query with ``FINAL``.

Bad input: a message that cannot be decoded or is not a valid event goes to the dead-letter
topic unchanged, with Kafka Connect's error headers (original topic, partition, offset,
reason), and the sink keeps going.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext

from etar import warehouse
from etar.config import Settings, get_settings
from etar.events import Event
from etar.serde import UUIDKeyDeserializer, event_deserializer, registry_client

log = logging.getLogger(__name__)

Row = tuple[Any, ...]


@dataclass
class Progress:
    """What the sink reports in its log and to ``etar stack status``."""

    rows: int = 0
    dead_letters: int = 0
    batches: int = 0
    lag: int = 0
    rows_per_s: float = 0.0
    committed: dict[str, int] = field(default_factory=dict)
    updated: float = 0.0

    def line(self) -> str:
        return (f"rows={self.rows} rows_per_s={self.rows_per_s:.0f} lag={self.lag} "
                f"dead_letters={self.dead_letters} batches={self.batches}")


def progress_path(settings: Settings) -> Path:
    return settings.state_dir / f"sink-{settings.sink_group_id}.json"


def read_progress(settings: Settings) -> Progress | None:
    """The running sink's last reported progress, if any."""
    try:
        return Progress(**json.loads(progress_path(settings).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _wire_info(value: bytes | None) -> str:
    """What the value's framing says, for the dead-letter reason."""
    if not value:
        return "empty value"
    if len(value) >= 5 and value[0] == 0:
        return f"Confluent framing, schema id {int.from_bytes(value[1:5], 'big')}"
    return f"no Confluent framing (first byte {value[0]:#04x}), {len(value)} bytes"


def event_row(event: Event) -> Row:
    """An event as a row in ``warehouse.COLUMNS`` order."""
    return tuple(getattr(event, column) for column in warehouse.COLUMNS)


def insert_blocks(rows: Iterable[Row], max_partitions: int) -> list[list[Row]]:
    """Group rows by minute so that no block spans more than ``max_partitions`` minutes."""
    by_minute: dict[datetime, list[Row]] = defaultdict(list)
    ts_index = warehouse.COLUMNS.index("event_ts")
    for row in rows:
        by_minute[row[ts_index].replace(second=0, microsecond=0)].append(row)
    minutes = sorted(by_minute)
    return [[row for minute in minutes[i:i + max_partitions] for row in by_minute[minute]]
            for i in range(0, len(minutes), max(1, max_partitions))]


class Sink:
    """The consume → decode → batch → insert → commit loop."""

    def __init__(self, settings: Settings | None = None, ch: Client | None = None) -> None:
        self.settings = settings or get_settings()
        self.ch = ch or warehouse.client(self.settings)
        self.max_partitions = int(str(self.ch.command(
            "SELECT value FROM system.settings WHERE name = 'max_partitions_per_insert_block'"))
            or 100)
        self.consumer = Consumer({
            "bootstrap.servers": self.settings.kafka_bootstrap_servers,
            "group.id": self.settings.sink_group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10_000,  # a crashed sink's partitions move on within 10 s
            "heartbeat.interval.ms": 1_000,
        })
        self.dlq = Producer({"bootstrap.servers": self.settings.kafka_bootstrap_servers,
                             "enable.idempotence": True, "acks": "all"})
        self.values = event_deserializer(registry_client(self.settings), project=True)
        self.keys = UUIDKeyDeserializer()
        self.progress = Progress()
        self._rows: list[Row] = []
        self._offsets: dict[tuple[str, int], int] = {}
        self._batch_started: float | None = None
        self._running = True
        self._window = (time.monotonic(), 0)

    # --- decoding --------------------------------------------------------------------
    def decode(self, message: Message) -> Row:
        """The row for one message; raises with the reason when it is not a valid event."""
        topic = message.topic() or ""
        record = self.values(message.value(), SerializationContext(topic, MessageField.VALUE))
        if not isinstance(record, dict):
            raise ValueError("value is empty (tombstone) or not an Avro record")
        event = Event.from_avro(record)
        key = self.keys(message.key(), SerializationContext(topic, MessageField.KEY))
        if key != event.user_id:
            raise ValueError(f"key {key} is not the event's user_id {event.user_id}")
        return event_row(event)

    def dead_letter(self, message: Message, reason: str) -> None:
        """Send the message, unchanged, to the dead-letter topic with the reason in headers."""
        headers: list[tuple[str, str | bytes | None]] = [
            ("__connect.errors.topic", str(message.topic()).encode()),
            ("__connect.errors.partition", str(message.partition()).encode()),
            ("__connect.errors.offset", str(message.offset()).encode()),
            ("__connect.errors.exception.message", reason.encode()[:4000]),
            ("__connect.errors.connector.name", b"etar-sink"),
        ]
        self.dlq.produce(self.settings.kafka_dlq_topic, key=message.key(),
                         value=message.value(), headers=headers)
        self.progress.dead_letters += 1
        log.warning("dead-lettered %s[%s]@%s: %s", message.topic(), message.partition(),
                    message.offset(), reason)

    # --- batching --------------------------------------------------------------------
    def _take(self, messages: list[Message]) -> None:
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", error)
                continue
            try:
                self._rows.append(self.decode(message))
            except Exception as exc:
                self.dead_letter(message, f"{type(exc).__name__}: {exc} "
                                          f"({_wire_info(message.value())})")
            self._offsets[(message.topic() or "", message.partition() or 0)] = (
                (message.offset() or 0) + 1)
            if self._batch_started is None:
                self._batch_started = time.monotonic()

    def _due(self) -> bool:
        if not self._offsets:
            return False
        if len(self._rows) >= self.settings.sink_batch_rows:
            return True
        started = self._batch_started or time.monotonic()
        return time.monotonic() - started >= self.settings.sink_batch_seconds

    def flush(self) -> None:
        """Insert the batch (retrying until ClickHouse takes it), then commit its offsets."""
        if not self._offsets:
            return
        delay = 0.5
        while True:
            try:
                for block in insert_blocks(self._rows, self.max_partitions):
                    self.ch.insert(self.settings.clickhouse_table, block,
                                   column_names=list(warehouse.COLUMNS))
                break
            except (ClickHouseError, OSError) as exc:
                if not self._running:
                    raise
                log.error("insert of %d rows failed (%s); retrying in %.1fs",
                          len(self._rows), exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30)
        if self.dlq.flush(30):
            raise RuntimeError("dead-letter messages were not acknowledged; not committing")
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._offsets.items()]
        self.consumer.commit(offsets=offsets, asynchronous=False)
        self.progress.rows += len(self._rows)
        self.progress.batches += 1
        self.progress.committed = {f"{t}[{p}]": o for (t, p), o in self._offsets.items()}
        self._rows, self._offsets, self._batch_started = [], {}, None

    # --- progress --------------------------------------------------------------------
    def _lag(self) -> int:
        total = 0
        for partition in self.consumer.assignment():
            _, high = self.consumer.get_watermark_offsets(partition, timeout=5, cached=True)
            position = self.consumer.position([partition])[0].offset
            if high >= 0 and position >= 0:
                total += high - position
        return total

    def report(self) -> None:
        started, rows = self._window
        now = time.monotonic()
        self.progress.rows_per_s = (self.progress.rows - rows) / max(now - started, 1e-9)
        self._window = (now, self.progress.rows)
        self.progress.lag = self._lag()
        self.progress.updated = time.time()
        path = progress_path(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(vars(self.progress)))
        tmp.replace(path)
        log.info("progress %s committed=%s", self.progress.line(), self.progress.committed)

    # --- loop ------------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        self._running = False

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.flush()

    def run(self, until: Callable[[], bool] | None = None, report_every: float = 10.0) -> None:
        """Consume until stopped (SIGTERM/SIGINT or ``until()``), then flush and close."""
        self.consumer.subscribe([self.settings.kafka_topic], on_revoke=self._on_revoke)
        last_report = time.monotonic()
        log.info("sink consuming %s into %s (batches of %d rows / %.1fs)",
                 self.settings.kafka_topic, self.settings.clickhouse_table,
                 self.settings.sink_batch_rows, self.settings.sink_batch_seconds)
        try:
            while self._running and not (until and until()):
                room = max(1, self.settings.sink_batch_rows - len(self._rows))
                self._take(self.consumer.consume(min(room, 5000), timeout=0.2))
                self.dlq.poll(0)
                if self._due():
                    self.flush()
                if time.monotonic() - last_report >= report_every:
                    self.report()
                    last_report = time.monotonic()
            self.flush()
            self.report()
        finally:
            self.consumer.close()
            self.dlq.flush(10)


def main() -> None:
    """Run the sink until SIGTERM / Ctrl-C (``etar sink``, ``python -m etar.sink``)."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sink = Sink()

    def _stop(signum: int, frame: FrameType | None) -> None:
        sink.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sink.run()


if __name__ == "__main__":
    main()
