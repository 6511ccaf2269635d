"""Multi-process Avro producer of interaction events.

Each worker process owns one idempotent ``SerializingProducer`` (``acks=all``) with the UUID
key serializer and an auto-registering ``AvroSerializer``, paces itself to its share of the
rate, and counts delivery reports in shared counters that the parent shows as progress.
Ctrl-C (or SIGTERM) asks every worker to stop sending, flush what is in flight and report.
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
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from confluent_kafka import KafkaError, Message, SerializingProducer

from etar.config import Settings, get_settings
from etar.errors import ConfigError, ServiceUnavailable
from etar.events import EventGenerator, EventType, GeneratorConfig, clock_within_minute, utc_now
from etar.minute import Minute
from etar.serde import UUIDKeySerializer, event_serializer, registry_client
from etar.topics import require_broker

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

    @property
    def events_per_s(self) -> float:
        return self.delivered / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        return (f"sent={self.sent} delivered={self.delivered} failed={self.failed} "
                f"processes={self.processes} elapsed_s={self.elapsed_s:.2f} "
                f"events_per_s={self.events_per_s:.1f}")


@dataclass
class _Counters:
    sent: Synchronized[int]
    delivered: Synchronized[int]
    failed: Synchronized[int]

    @classmethod
    def create(cls, ctx: Any) -> _Counters:
        return cls(ctx.Value("q", 0), ctx.Value("q", 0), ctx.Value("q", 0))

    def totals(self) -> tuple[int, int, int]:
        return self.sent.value, self.delivered.value, self.failed.value


def _producer_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.size": 256 * 1024,
        "compression.type": "lz4",
        "message.timeout.ms": 60_000,
    }


def _worker(index: int, options: ProduceOptions, settings: Settings, counters: _Counters,
            stop: MpEvent, parent: int) -> None:
    """One producer process: generate, serialize, send, count deliveries.

    Stops when the parent says so, or when the parent is gone (never an orphan producing on).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    rate, count = options.share(index)
    seed = None if options.seed is None else options.seed * 1_000 + index
    config = GeneratorConfig(seed=seed)
    if options.error_rates:
        config.error_rates = dict(options.error_rates)
    clock: Callable[[], datetime] = utc_now
    if options.minute is not None:
        clock = clock_within_minute(options.minute, random.Random(seed))
    generator = EventGenerator(config, clock)
    producer = SerializingProducer({
        **_producer_config(settings),
        "key.serializer": UUIDKeySerializer(),
        "value.serializer": event_serializer(registry_client(settings)),
    })
    pending = {"delivered": 0, "failed": 0}

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        pending["failed" if err is not None else "delivered"] += 1

    def publish() -> None:
        for name in ("delivered", "failed"):
            counter = getattr(counters, name)
            with counter.get_lock():
                counter.value += pending[name]
            pending[name] = 0

    started = time.monotonic()
    deadline = None if options.duration is None else started + options.duration
    sent = 0
    next_check = started + 1.0
    while not stop.is_set() and (count is None or sent < count):
        now = time.monotonic()
        if now >= next_check:
            next_check = now + 1.0
            if os.getppid() != parent:
                log.warning("producer %d: parent gone, stopping", index)
                break
        if deadline is not None and now >= deadline:
            break
        if rate > 0:
            due = started + sent / rate
            if due > now:
                producer.poll(min(due - now, 0.1))
                continue
        event = next(generator)
        while True:
            try:
                producer.produce(settings.kafka_topic, key=event.user_id, value=event,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
        if sent % 500 == 0:
            producer.poll(0)
            with counters.sent.get_lock():
                counters.sent.value += 500
            publish()
    with counters.sent.get_lock():
        counters.sent.value += sent % 500
    while producer.flush(1) > 0:
        publish()
    publish()


def produce(options: ProduceOptions, settings: Settings | None = None,
            progress: Callable[[int, int, int], None] | None = None) -> ProduceSummary:
    """Run ``options.processes`` producer processes and wait for them.

    ``progress(sent, delivered, failed)`` is called a few times a second. Interrupting with
    Ctrl-C stops the workers cleanly; the summary then covers what was sent so far.
    """
    settings = settings or get_settings()
    options.validate()
    require_broker(settings)
    _require_registry(settings)
    ctx = mp.get_context("spawn")
    counters = _Counters.create(ctx)
    stop = ctx.Event()
    workers = [ctx.Process(target=_worker,
                           args=(i, options, settings, counters, stop, os.getpid()),
                           name=f"etar-producer-{i}") for i in range(options.processes)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops as cleanly as Ctrl-C
    try:
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
    return ProduceSummary(sent, delivered, failed, elapsed, options.processes)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _require_registry(settings: Settings) -> None:
    try:
        registry_client(settings).get_subjects()
    except Exception as exc:
        raise ServiceUnavailable(
            f"Schema Registry at {settings.schema_registry_url} is unreachable ({exc}); start "
            "the native stack with `etar stack up --detach` or set ETAR_SCHEMA_REGISTRY_URL"
        ) from exc
