"""Topics on the broker: the admin client, the event and dead-letter topics, a reachability check.

Used by the producer, the sink, the registry and the native stack alike; works against any
Kafka (the native broker or the compose one).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from etar.config import Settings
from etar.errors import ServiceUnavailable, StackError

log = logging.getLogger(__name__)
T = TypeVar("T")
_quiet = logging.getLogger("etar.librdkafka")
_quiet.setLevel(logging.CRITICAL)  # probes expect refused connections; their errors say why


def admin(settings: Settings, timeout: float = 5.0, bootstrap: str | None = None) -> AdminClient:
    """An admin client for the broker (librdkafka's own connection logs silenced); ``bootstrap``
    names one broker of a cluster instead of ``kafka_bootstrap_servers``."""
    return AdminClient({"bootstrap.servers": bootstrap or settings.kafka_bootstrap_servers,
                        "socket.timeout.ms": int(timeout * 1000),
                        "logger": _quiet})  # type: ignore[dict-item]


def consumer_config(settings: Settings, group: str | None = None,
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """librdkafka settings of every etar consumer: the broker, a group (``None``: a throwaway
    one, for readers that assign partitions and never commit), offsets committed only by hand,
    then ``extra`` (the sink's fetch sizes, a socket timeout…) on top."""
    return {"bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": group or f"etar-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False, **(extra or {})}


def consumer(settings: Settings, group: str | None = None,
             extra: Mapping[str, Any] | None = None) -> Consumer:
    """A consumer configured by :func:`consumer_config`."""
    return Consumer(consumer_config(settings, group, extra))


_NO_LEADER_YET = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                  KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION,
                  KafkaError._UNKNOWN_TOPIC)


def watermarks(consumer: Consumer, topic: str, partition: int = 0, within: float = 30.0
               ) -> tuple[int, int]:
    """A partition's low and high offsets. A topic just created, or a broker just restarted,
    may have no leader for a few seconds: retriable errors are retried for ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=10)
            return low, high
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = isinstance(error, KafkaError) and (
                error.retriable() or error.code() in _NO_LEADER_YET)
            if not retriable or time.monotonic() > deadline:
                raise
            log.info("waiting for the leader of %s[%d]: %s", topic, partition, error)
            time.sleep(0.5)


def ensure_topic(settings: Settings, name: str, partitions: int,
                 config: dict[str, str] | None = None) -> None:
    """Create a topic unless it exists (idempotent), with the topology's replication factor
    (and, replicated, ``min.insync.replicas``: an ``acks=all`` write needs two copies)."""
    client = admin(settings)
    if name in client.list_topics(timeout=10).topics:
        return
    replicas = settings.kafka_replication_factor
    config = {**replication_config(settings), **(config or {})}
    if replicas > 1:  # a caller's lower value (meant for one broker) does not weaken a cluster
        floor = settings.kafka_min_insync_replicas
        config["min.insync.replicas"] = str(max(int(config["min.insync.replicas"]), floor))
    futures = client.create_topics([NewTopic(name, partitions, replicas, config=config)])
    try:
        futures[name].result(timeout=30)
    except Exception as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise StackError(f"creating topic {name!r} failed: {exc}") from exc


def delete_topics(settings: Settings, names: list[str]) -> None:
    """Delete the topics; one that does not exist is no error."""
    client = admin(settings)  # kept alive until its futures are done
    for name, future in client.delete_topics(names, operation_timeout=30).items():
        try:
            future.result(timeout=30)
        except Exception as exc:
            if "UNKNOWN_TOPIC_OR_PART" not in str(exc):
                raise StackError(f"deleting topic {name!r} failed: {exc}") from exc


EVENT_TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}
"""The event topic's own settings. Broker time (``LogAppendTime``) rises with the offset in a
partition, whatever the producers' clocks and however late a queued batch is delivered: the
rule :mod:`etar.orchestration.completeness` stands on. The event's own time is its Avro
``event_ts``, which the sink and the table use; the Kafka timestamp is read by nothing else."""
DEAD_LETTER_HEADROOM = 64 * 1024
"""Bytes a dead letter may carry beyond the event it was (the error headers: ≤ 4 kB reason)."""


def replication_config(settings: Settings) -> dict[str, str]:
    """Per-topic settings of a replicated topology (none on a single broker)."""
    if settings.kafka_replication_factor < 2:
        return {}
    return {"min.insync.replicas": str(settings.kafka_min_insync_replicas)}


def _known_soon(call: Callable[[], T], timeout: float) -> T:
    """``call()``, asked again while the broker does not know the topic yet (one just created
    reaches every broker of a cluster a moment later) or the client knows no controller yet
    (a cluster's quorum just formed, right after a restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except Exception as exc:
            transient = ("UNKNOWN_TOPIC_OR_PART" in str(exc)
                         or "waiting for controller" in str(exc))
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def topic_config(settings: Settings, name: str, timeout: float = 30.0) -> dict[str, str]:
    """A topic's effective configuration (defaults included)."""
    client = admin(settings)
    resource = ConfigResource(ResourceType.TOPIC, name)
    try:
        entries = _known_soon(
            lambda: client.describe_configs([resource])[resource].result(timeout=timeout),
            timeout)
    except Exception as exc:
        raise StackError(f"reading the configuration of topic {name!r} failed: {exc}") from exc
    return {key: entry.value for key, entry in entries.items() if entry.value is not None}


def set_topic_config(settings: Settings, name: str, config: dict[str, str],
                     timeout: float = 30.0) -> None:
    """Set these keys of an existing topic (the others are left as they are; idempotent)."""
    client = admin(settings)
    resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
        for key, value in config.items()])
    try:
        _known_soon(lambda: client.incremental_alter_configs([resource])[resource].result(
            timeout=timeout), timeout)
    except Exception as exc:
        raise StackError(f"setting {config} on topic {name!r} failed: {exc}") from exc


def dead_letter_limit(event_topic: dict[str, str]) -> int:
    """The ``max.message.bytes`` a dead-letter topic needs beside this event topic."""
    return int(event_topic.get("max.message.bytes", "1048588")) + DEAD_LETTER_HEADROOM


def align_topics(settings: Settings) -> None:
    """Give existing topics what :func:`create_topics` creates them with: the event topic's
    broker timestamps, a dead-letter topic that takes whatever the event topic takes
    (a larger limit set by hand is kept). Idempotent; run at every stack start."""
    event = topic_config(settings, settings.kafka_topic)
    changes = {k: v for k, v in EVENT_TOPIC_CONFIG.items() if event.get(k) != v}
    if changes:
        log.info("topic %s: setting %s", settings.kafka_topic, changes)
        set_topic_config(settings, settings.kafka_topic, changes)
    need = dead_letter_limit(event)
    have = int(topic_config(settings, settings.kafka_dlq_topic).get("max.message.bytes", "0"))
    if have < need:
        log.info("topic %s: max.message.bytes %d -> %d (the event topic's limit and room for "
                 "the error headers)", settings.kafka_dlq_topic, have, need)
        set_topic_config(settings, settings.kafka_dlq_topic, {"max.message.bytes": str(need)})


def create_topics(settings: Settings) -> None:
    """The event topic (several partitions, broker timestamps) and its dead-letter topic,
    aligned with it (:func:`align_topics`)."""
    ensure_topic(settings, settings.kafka_topic, settings.kafka_topic_partitions,
                 EVENT_TOPIC_CONFIG)
    ensure_topic(settings, settings.kafka_dlq_topic, 1)
    align_topics(settings)


def require_broker(settings: Settings, timeout: float = 5.0) -> None:
    """Fail fast with a clear message when the broker cannot be reached."""
    try:
        metadata = admin(settings, timeout).list_topics(timeout=timeout)
    except Exception as exc:
        raise ServiceUnavailable(
            f"Kafka broker at {settings.kafka_bootstrap_servers} is unreachable ({exc}); start "
            "the native stack with `etar stack up --detach` or set ETAR_KAFKA_BOOTSTRAP_SERVERS"
        ) from exc
    if settings.kafka_topic not in metadata.topics:
        raise ServiceUnavailable(
            f"topic {settings.kafka_topic!r} does not exist on {settings.kafka_bootstrap_servers}"
        )
