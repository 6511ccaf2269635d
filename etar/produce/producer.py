"""Multi-process Avro producer of interaction events.

The parent registers the event schema (its id frames every value) and starts the workers.
Each worker loops: draw a batch of events from the generator, write them as Confluent-framed
values (joined from Avro fragments encoded once: the header, a user's id, a product…), and hand
them with their 16-byte user-id keys to one idempotent ``Producer`` (``acks=all``). It paces
itself to its share of the rate and publishes its sent / delivered / failed totals in shared
memory, which the parent shows as progress. Only failed deliveries call back into Python.
Ctrl-C (or SIGTERM), to the parent alone or to the whole process group, asks every worker to
stop sending, flush what is in flight and report: workers ignore both signals and stop when
the parent sets ``stop``.

Workers import neither the settings nor the registry client (a second or more of start-up on
a busy machine): they get a plain :class:`_Plan`.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.synchronize import Event as MpEvent
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, Message, Producer

from etar.errors import ConfigError, ServiceUnavailable
from etar.events.event import (
    EventGenerator,
    EventType,
    GeneratorConfig,
    clock_within_minute,
    utc_now,
)
from etar.events.serde import EventValueWriter
from etar.minute import Minute

if TYPE_CHECKING:
    from etar.config import Settings

log = logging.getLogger(__name__)


@dataclass
class ProduceOptions:
    """What ``etar produce`` was asked to do."""

    rate: float = 0.0
    """Events per second over all processes; 0 sends as fast as the broker takes them."""
    duration: float | None = None
    count: int | None = None
    processes: int = 1
    error_rates: dict[EventType, float] = field(default_factory=dict)
    seed: int | None = None
    minute: Minute | None = None
    start_at: datetime | None = None
    """Workers send from this instant (UTC) on, not as soon as they are ready, and ``duration``
    counts from it: a run started a few seconds early covers a minute from its first second
    to ``start_at + duration``, events stamped as they go."""

    def validate(self) -> None:
        """Fail fast, with the reason, on settings that cannot work."""
        if self.rate < 0:
            raise ConfigError(f"--rate must be >= 0 events/s (0 = unthrottled), got {self.rate}")
        if self.processes < 1:
            raise ConfigError(f"--processes must be >= 1, got {self.processes}")
        if self.count is not None and self.count < 0:
            raise ConfigError(f"--count must be >= 0, got {self.count}")
        if self.duration is not None and self.duration <= 0:
            raise ConfigError(f"--duration must be > 0 seconds, got {self.duration}")
        if self.start_at is not None and self.start_at.tzinfo is None:
            raise ConfigError(f"--start-at must carry a time zone, got {self.start_at}")
        GeneratorConfig(error_rates=self.error_rates or GeneratorConfig().error_rates)

    def share(self, index: int) -> tuple[float, int | None]:
        """Rate and count of worker ``index`` (the remainder goes to the first workers)."""
        rate = self.rate / self.processes
        if self.count is None:
            return rate, None
        base, extra = divmod(self.count, self.processes)
        return rate, base + (1 if index < extra else 0)


@dataclass
class ProduceSummary:
    """Totals of one run; ``line()`` is the ``key=value`` form scripts read."""

    sent: int
    delivered: int
    failed: int
    elapsed_s: float
    processes: int
    sending_s: float = 0.0
    """From the first event handed to Kafka to the last delivery (``elapsed_s`` without the
    workers' start-up)."""

    @property
    def events_per_s(self) -> float:
        return self.delivered / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def sending_events_per_s(self) -> float:
        return self.delivered / self.sending_s if self.sending_s > 0 else 0.0

    def line(self) -> str:
        return (f"sent={self.sent} delivered={self.delivered} failed={self.failed} "
                f"processes={self.processes} elapsed_s={self.elapsed_s:.2f} "
                f"events_per_s={self.events_per_s:.1f} sending_s={self.sending_s:.2f}")


BATCH = 1_000
"""Most events generated, serialized and handed to librdkafka in one step of a worker."""


class _Counters:
    """Each worker's sent, delivered and failed totals, in shared memory, and when it began
    and ended sending (``time.monotonic_ns``, one clock for every process on the machine).

    A worker only writes its own slots, so no lock is needed; the parent sums them.
    """

    _WIDTH = 5

    def __init__(self, ctx: Any, processes: int) -> None:
        self._slots = ctx.Array("q", self._WIDTH * processes, lock=False)

    def publish(self, index: int, sent: int, delivered: int, failed: int) -> None:
        base = self._WIDTH * index
        self._slots[base:base + 3] = [sent, delivered, failed]

    def mark(self, index: int, slot: int) -> None:
        """Record now as worker ``index``'s start (``slot`` 3) or end (4) of sending."""
        self._slots[self._WIDTH * index + slot] = time.monotonic_ns()

    def totals(self) -> tuple[int, int, int]:
        slots, width = list(self._slots), self._WIDTH
        return sum(slots[0::width]), sum(slots[1::width]), sum(slots[2::width])

    def sending_s(self) -> float:
        """From the first worker's start of sending to the last one's end."""
        starts = [s for s in self._slots[3::self._WIDTH] if s]
        ends = [e for e in self._slots[4::self._WIDTH] if e]
        return (max(ends) - min(starts)) / 1e9 if starts and ends else 0.0


def producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings of a worker's producer (the benchmark gives Kafka's tool the same)."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.size": 1024 * 1024,  # while the broker lags, fewer and larger requests
        "compression.type": "lz4",
        "message.timeout.ms": 60_000,
        # Only failures call back into Python; what is neither failed nor still queued
        # (``len(producer)``) was delivered.
        "delivery.report.only.error": True,
    }


class _Sender:
    """One worker's producer: hands keyed values to librdkafka and accounts for them.

    ``delivered`` is exact whenever it is read: every message sent is either still queued
    (``len(producer)``), or failed (its error report was served), or acknowledged.
    """

    def __init__(self, config: dict[str, Any], topic: str) -> None:
        self.topic = topic
        self.sent = 0
        self.failed = 0
        self.producer = Producer({**config, "on_delivery": self._on_error})

    def _on_error(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.failed += 1
            if self.failed == 1:
                log.warning("producer: delivery failed: %s", err)

    def send(self, keys: list[bytes], values: list[bytes]) -> None:
        produce, poll, topic = self.producer.produce, self.producer.poll, self.topic
        for key, value in zip(keys, values, strict=True):
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:  # the local queue is full: let librdkafka drain it
                    poll(0.05)
        self.sent += len(values)
        poll(0)

    @property
    def delivered(self) -> int:
        return self.sent - self.failed - len(self.producer)

    def flush(self, publish: Callable[[], None]) -> None:
        while self.producer.flush(1) > 0:
            publish()


@dataclass
class Pacer:
    """Spaces events ``1 / rate`` apart from ``started``: event k is due at started + k / rate.

    A worker that fell behind (a busy machine) catches up at once, so over any run the count
    sent matches the rate; it never sends an event before it is due. ``rate`` 0: no limit.
    """

    rate: float
    started: float

    def due(self, now: float, sent: int) -> int:
        """How many more events may go at ``now`` (at most ``BATCH`` when unlimited)."""
        if self.rate <= 0:
            return BATCH
        return min(BATCH, int((now - self.started) * self.rate) + 1 - sent)

    def wait(self, now: float, sent: int) -> float:
        """Seconds until the next event is due."""
        return max(0.0, self.started + sent / self.rate - now) if self.rate > 0 else 0.0


@dataclass(frozen=True)
class _Plan:
    """What every worker gets from the parent."""

    options: ProduceOptions
    config: dict[str, Any]
    topic: str
    schema_id: int
    parent: int


def _worker(index: int, plan: _Plan, counters: _Counters, stop: MpEvent) -> None:
    """One producer process: generate, serialize, send in batches, count deliveries.

    Stops when the parent says so, or when the parent is gone (never an orphan producing on).
    """
    _ignore_stop_signals()  # the parent decides when to stop (``stop``)
    options = plan.options
    rate, count = options.share(index)
    seed = None if options.seed is None else options.seed * 1_000 + index
    config = GeneratorConfig(seed=seed)
    if options.error_rates:
        config.error_rates = dict(options.error_rates)
    clock: Callable[[], datetime] = utc_now
    if options.minute is not None:
        clock = clock_within_minute(options.minute, random.Random(seed))
    generator = EventGenerator(config, clock)
    writer = EventValueWriter(plan.schema_id)
    sender = _Sender(plan.config, plan.topic)

    def publish() -> None:
        counters.publish(index, sender.sent, sender.delivered, sender.failed)

    started = time.monotonic()
    if options.start_at is not None:  # a worker ready late catches up, as after a stall
        late = time.time() - options.start_at.timestamp()
        stop.wait(max(0.0, -late))  # Ctrl-C while waiting stops at once
        started = time.monotonic() - max(0.0, late)
    counters.mark(index, 3)
    pacer = Pacer(rate, started)
    deadline = None if options.duration is None else started + options.duration
    next_check = started
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_check:
            next_check = now + 0.2
            publish()
            if os.getppid() != plan.parent:
                log.warning("producer %d: parent gone, stopping", index)
                break
        if deadline is not None and now >= deadline:
            break
        if count is not None and sender.sent >= count:
            break
        size = pacer.due(now, sender.sent)
        if size <= 0:  # not due yet: sleep (never under 2 ms, which rounds to a busy spin)
            sender.producer.poll(min(max(pacer.wait(now, sender.sent), 0.002), 0.1))
            continue
        if count is not None:
            size = min(size, count - sender.sent)
        steps = generator.steps(size)
        sender.send([step[0].key for step in steps],
                    writer.write_steps(steps, generator.event_ids(size)))
    sender.flush(publish)
    publish()
    counters.mark(index, 4)


def produce(options: ProduceOptions, settings: Settings | None = None,
            progress: Callable[[int, int, int], None] | None = None) -> ProduceSummary:
    """Run ``options.processes`` producer processes and wait for them.

    ``progress(sent, delivered, failed)`` is called a few times a second. Interrupting with
    Ctrl-C stops the workers cleanly; the summary then covers what was sent so far.
    """
    from etar.config import get_settings
    from etar.topics import require_broker

    settings = settings or get_settings()
    options.validate()
    require_broker(settings)
    plan = _Plan(options, producer_config(settings), settings.kafka_topic,
                 _register_schema(settings), os.getpid())
    ctx = mp.get_context("spawn")
    counters = _Counters(ctx, options.processes)
    stop = ctx.Event()
    workers = [ctx.Process(target=_worker, args=(i, plan, counters, stop),
                           name=f"etar-producer-{i}") for i in range(options.processes)]
    started = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops as cleanly as Ctrl-C
    try:
        _start(workers)
        while any(worker.is_alive() for worker in workers):
            if progress is not None:
                progress(*counters.totals())
            for worker in workers:
                worker.join(0.2 / len(workers))
    except KeyboardInterrupt:
        log.warning("interrupted: stopping producers and flushing in-flight events")
        stop.set()
        for worker in workers:
            worker.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    elapsed = time.monotonic() - started
    if progress is not None:
        progress(*counters.totals())
    crashed = [w.name for w in workers if w.exitcode not in (0, None)]
    if crashed:
        raise ServiceUnavailable(f"producer processes failed: {', '.join(crashed)}")
    sent, delivered, failed = counters.totals()
    return ProduceSummary(sent, delivered, failed, elapsed, options.processes,
                          counters.sending_s())


_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def _start(workers: list[Any]) -> None:
    """Start ``workers`` with Ctrl-C and SIGTERM held back (here and, inherited, in them).

    A signal to the whole process group while a worker is still importing would otherwise
    kill it before it could ignore the signal. Blocking covers this thread and the workers it
    forks; one that reaches another thread of the parent (numpy's, say) is only noted while
    they start. Either way the parent gets it as ``KeyboardInterrupt`` once they all run.
    """
    noted: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: noted.append(signum))
                for signum in _STOP_SIGNALS}
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        for worker in workers:
            worker.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # what was held is noted now
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if noted:
        raise KeyboardInterrupt(signal.Signals(noted[0]).name)


def _ignore_stop_signals() -> None:
    """A worker's first step: ignore Ctrl-C and SIGTERM (dropping any held back since it
    started), so that a signal to the process group leaves the stopping to the parent."""
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _register_schema(settings: Settings) -> int:
    """Register the event schema for the topic's values; its id (what frames every value)."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from etar.events.serde import register_event_schema, registry_client, value_subject

    try:
        return register_event_schema(registry_client(settings), settings.kafka_topic)
    except SchemaRegistryError as exc:
        raise ServiceUnavailable(
            f"Schema Registry at {settings.schema_registry_url} refused the event schema for "
            f"{value_subject(settings.kafka_topic)}: {exc}") from exc
    except Exception as exc:
        raise ServiceUnavailable(
            f"Schema Registry at {settings.schema_registry_url} is unreachable ({exc}); start "
            "the native stack with `etar stack up --detach` or set ETAR_SCHEMA_REGISTRY_URL"
        ) from exc
