"""Topics on the broker: the admin client, the event and dead-letter topics, a reachability check.

Used by the producer, the sink, the registry and the native stack alike; works against any
Kafka (the native broker or the compose one).
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from etar.config import Settings
from etar.errors import ServiceUnavailable, StackError

log = logging.getLogger(__name__)
_quiet = logging.getLogger("etar.librdkafka")
_quiet.setLevel(logging.CRITICAL)  # probes expect refused connections; their errors say why


def admin(settings: Settings, timeout: float = 5.0) -> AdminClient:
    """An admin client for the broker (librdkafka's own connection logs silenced)."""
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers,
                        "socket.timeout.ms": int(timeout * 1000),
                        "logger": _quiet})  # type: ignore[dict-item]


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
    """Create a topic unless it exists (idempotent)."""
    client = admin(settings)
    if name in client.list_topics(timeout=10).topics:
        return
    futures = client.create_topics([NewTopic(name, partitions, 1, config=config or {})])
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


def create_topics(settings: Settings) -> None:
    """The event topic (several partitions) and its dead-letter topic."""
    ensure_topic(settings, settings.kafka_topic, settings.kafka_topic_partitions)
    ensure_topic(settings, settings.kafka_dlq_topic, 1)


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
