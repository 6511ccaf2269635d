"""When is a minute complete in ClickHouse? When the sink has committed past its cut-off.

The cut-off of a minute is its end plus the allowed lateness (``ETAR_PIPELINE_LATENESS_SECONDS``).
The event topic stamps records with broker time (``message.timestamp.type=LogAppendTime``, set
by :func:`etar.topics.create_topics` / ``align_topics`` at every stack start), which never
decreases along a partition's offsets. So every record appended before the cut-off sits below,
per partition, the first offset whose timestamp is at or after the cut-off
(``offsets_for_times``; the high watermark where there is none yet), whatever the producers'
clocks and however late a queued batch was delivered. (With producer timestamps, CreateTime, a
record stamped after the cut-off could sit before records of the minute, and the minute was
declared complete before they were in.) The sink commits an offset only after ClickHouse
accepted every row below it. So once, for every partition, the sink group's committed offset
has reached that target, everything appended for the minute by its cut-off is queryable: no
fixed sleep, and no waiting for traffic that came after the minute. An event of the minute
appended after the cut-off (a producer held back longer than the lateness) is late: the
reconciliation of minutes with their reports redoes the minute.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from confluent_kafka import Consumer, KafkaException, TopicPartition

from etar.config import Settings, get_settings
from etar.errors import ServiceUnavailable
from etar.minute import Minute
from etar.topics import consumer, watermarks


@dataclass(frozen=True)
class Completeness:
    """Whether a minute is complete, and if not, why."""

    minute: Minute
    complete: bool
    reason: str
    behind: dict[int, int] = field(default_factory=dict)
    """Partition → messages before the cut-off that the sink has not committed yet."""


def cutoff(minute: Minute, settings: Settings) -> datetime:
    """The instant after which a message no longer counts as sent within the minute."""
    return minute.end + timedelta(seconds=settings.pipeline_lateness_seconds)


def _consumer(settings: Settings) -> Consumer:
    """A consumer in the sink's group that never joins it: it only reads offsets."""
    return consumer(settings, settings.sink_group_id, {"socket.timeout.ms": 5000})


def check_minute(minute: Minute, settings: Settings | None = None,
                 now: datetime | None = None, timeout: float = 10.0) -> Completeness:
    """Is everything produced before the minute's cut-off in ClickHouse?"""
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    until = cutoff(minute, settings)
    if now < until:
        return Completeness(minute, False, f"the cut-off {until:%H:%M:%S}Z is "
                                           f"{(until - now).total_seconds():.1f}s away")
    reader = _consumer(settings)
    try:
        topic = reader.list_topics(settings.kafka_topic, timeout=timeout).topics.get(
            settings.kafka_topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise ServiceUnavailable(f"topic {settings.kafka_topic!r} is not on "
                                     f"{settings.kafka_bootstrap_servers}")
        partitions = sorted(topic.partitions)
        cut_ms = int(until.timestamp() * 1000)
        firsts = reader.offsets_for_times(
            [TopicPartition(settings.kafka_topic, p, cut_ms) for p in partitions], timeout)
        committed = reader.committed(
            [TopicPartition(settings.kafka_topic, p) for p in partitions], timeout)
        behind: dict[int, int] = {}
        for first, done in zip(firsts, committed, strict=True):
            target = first.offset
            if target < 0:  # nothing at or after the cut-off yet: everything there counts
                target = watermarks(reader, settings.kafka_topic, first.partition,
                                    within=timeout)[1]
            position = max(done.offset, 0)
            if position < target:
                behind[first.partition] = target - position
    except KafkaException as exc:
        raise ServiceUnavailable(f"cannot read the sink's progress from "
                                 f"{settings.kafka_bootstrap_servers}: {exc}") from exc
    finally:
        reader.close()
    if behind:
        return Completeness(minute, False, f"the sink ({settings.sink_group_id}) has "
                                           f"{sum(behind.values())} messages from before the "
                                           f"cut-off still to commit", behind)
    return Completeness(minute, True, f"the sink committed everything sent before "
                                      f"{until:%H:%M:%S}Z")


def wait_briefly_for_minute(minute: Minute, settings: Settings | None = None,
                            within: float = 6.0, every: float = 0.2) -> Completeness:
    """:func:`check_minute`, polled for up to ``within`` seconds (sleeping to the cut-off
    first when it is that close), so a scheduler's poke rarely needs a second round trip."""
    settings = settings or get_settings()
    deadline = time.monotonic() + within
    wait = (cutoff(minute, settings) - datetime.now(UTC)).total_seconds()
    if 0 < wait <= within:
        time.sleep(wait)
    while True:
        state = check_minute(minute, settings)
        if state.complete or time.monotonic() + every > deadline:
            return state
        time.sleep(every)
