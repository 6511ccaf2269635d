"""The dead-letter topic: messages that are not valid events, unchanged, with the reason.

Headers follow Kafka Connect's dead-letter queue (``__connect.errors.*``), so tools written for
Connect's ClickHouse sink read etar's dead letters too. The message's own headers are kept.
A dead letter counts as sent only when its delivery report says so: the sink commits a
message's offset after that, never on ``flush()`` returning alone.

The dead-letter topic accepts what the event topic accepts (:func:`etar.topics.create_topics`
aligns its ``max.message.bytes``, with room for the error headers) and the producer compresses.
A dead letter the broker still refuses as too large (a value the event topic took compressed
better than it compresses here, a topic configured by hand) is replaced by a small record
carrying the original's coordinates (topic, partition, offset, timestamp, key) and the reason,
header ``etar.dead_letter.replaced``: never lost silently, and the sink moves on.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message

from etar.sink.batch import DeadLetter, SinkError

log = logging.getLogger(__name__)

CONNECTOR_NAME = b"etar-sink"
REPLACED_HEADER = "etar.dead_letter.replaced"
MAX_REASON_BYTES = 4000
MAX_KEY_BYTES = 4096
"""A key longer than this is named by its size only in a replacement record."""
TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE})
"""The broker's refusal (the topic's limit), and the producer's own (``message.max.bytes``)."""


class _Producer(Protocol):
    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None: ...

    def flush(self, timeout: float = ...) -> int: ...

    def poll(self, timeout: float = ...) -> int: ...


def _coordinates(letter: DeadLetter) -> str:
    return f"{letter.topic}[{letter.partition}]@{letter.offset}"


def headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The message's own headers, then Kafka Connect's error headers."""
    return [*(letter.headers or []), *_error_headers(letter, letter.reason)]


def _error_headers(letter: DeadLetter, reason: str) -> list[tuple[str, bytes]]:
    return [("__connect.errors.topic", letter.topic.encode()),
            ("__connect.errors.partition", str(letter.partition).encode()),
            ("__connect.errors.offset", str(letter.offset).encode()),
            ("__connect.errors.exception.message", reason.encode()[:MAX_REASON_BYTES]),
            ("__connect.errors.connector.name", CONNECTOR_NAME)]


def _size(data: bytes | None) -> int:
    return len(data) if data is not None else 0


Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]
"""A record's key, value and headers."""


def replacement(letter: DeadLetter, why: str) -> Record:
    """(key, value, headers) of the record that stands for a dead letter too large to write.

    The value is JSON: the original's topic, partition, offset, timestamp (ms, or null when
    unknown), key (base64; null when longer than ``MAX_KEY_BYTES``), their sizes, the reason it
    is a dead letter and why it was replaced. The original is still in the event topic until
    its retention ends.
    """
    key = letter.key if _size(letter.key) <= MAX_KEY_BYTES else None
    value = {
        "replaced": why, "topic": letter.topic, "partition": letter.partition,
        "offset": letter.offset, "timestamp": letter.timestamp,
        "key": base64.b64encode(key).decode() if key is not None else None,
        "key_bytes": _size(letter.key), "value_bytes": _size(letter.value),
        "headers": len(letter.headers or []),
        "reason": letter.reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")}
    reason = f"{letter.reason}; replaced: {why}"
    return key, json.dumps(value).encode(), [*_error_headers(letter, reason),
                                             (REPLACED_HEADER, why.encode())]


class DeadLetters:
    """Sends dead letters and tells whether every one of them was acknowledged."""

    def __init__(self, producer: _Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self._pending = 0
        self._failed: list[str] = []
        self._too_large: list[tuple[DeadLetter, str]] = []
        self.replaced = 0
        """Dead letters written as a replacement record (too large for the topic)."""

    def _delivered(self, letter: DeadLetter, replaced: bool, error: KafkaError | None,
                   message: Message) -> None:
        self._pending -= 1
        if error is None:
            return
        if error.code() in TOO_LARGE and not replaced:
            self._too_large.append((letter, f"{error.str()} ({error.name()})"))
        else:
            self._failed.append(f"{error} (dead letter of {_coordinates(letter)})")

    def _produce(self, letter: DeadLetter, replaced: str | None = None) -> None:
        if replaced is None:
            key, value, extra = letter.key, letter.value, headers(letter)
        else:
            key, value, extra = replacement(letter, replaced)
        while True:
            try:
                self.producer.produce(self.topic, key=key, value=value, headers=extra,
                                      on_delivery=partial(self._delivered, letter,
                                                          replaced is not None))
                break
            except BufferError:  # the local queue is full: let deliveries drain
                self.producer.poll(0.5)
            except KafkaException as exc:  # over the producer's own message.max.bytes
                error = exc.args[0] if exc.args else None
                if replaced is None and isinstance(error, KafkaError) and (
                        error.code() in TOO_LARGE):
                    self._too_large.append((letter, f"{error.str()} ({error.name()})"))
                    return
                raise SinkError(f"cannot queue the dead letter of {_coordinates(letter)} for "
                                f"{self.topic!r}: {exc}") from exc
        self._pending += 1

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Queue the letters for the dead-letter topic (see :meth:`confirm`)."""
        for letter in letters:
            self._produce(letter)
            log.warning("dead letter %s: %s", _coordinates(letter), letter.reason)

    def _replace_too_large(self) -> None:
        letters, self._too_large = self._too_large, []
        for letter, error in letters:
            size = _size(letter.key) + _size(letter.value)
            why = (f"the dead letter ({size} bytes of key and value) is larger than "
                   f"{self.topic!r} accepts: {error}")
            log.error("dead letter %s replaced by its coordinates: %s", _coordinates(letter), why)
            self._produce(letter, replaced=why)
            self.replaced += 1

    def confirm(self, timeout: float) -> None:
        """Wait for the delivery reports; raise unless every letter was acknowledged (as
        itself, or as a replacement record when it was too large)."""
        self.producer.flush(timeout)
        if self._too_large:
            self._replace_too_large()
            self.producer.flush(timeout)
        failed, self._failed = self._failed, []
        if failed or self._pending or self._too_large:
            pending, self._pending = self._pending, 0
            self._too_large = []
            raise SinkError(
                f"{len(failed)} dead letters failed and {pending} were not acknowledged within "
                f"{timeout:.0f}s on {self.topic!r} ({'; '.join(failed[:3])}); nothing is "
                "committed, the messages are read again after a restart")
