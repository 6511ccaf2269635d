"""The dead-letter topic: messages that are not valid events, unchanged, with the reason.

Headers follow Kafka Connect's dead-letter queue (``__connect.errors.*``), so tools written for
Connect's ClickHouse sink read etar's dead letters too. The message's own headers are kept.
A dead letter counts as sent only when its delivery report says so: the sink commits a
message's offset after that, never on ``flush()`` returning alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message

from etar.sink_batch import DeadLetter, SinkError

log = logging.getLogger(__name__)

CONNECTOR_NAME = b"etar-sink"


class _Producer(Protocol):
    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None: ...

    def flush(self, timeout: float = ...) -> int: ...

    def poll(self, timeout: float = ...) -> int: ...


def headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The message's own headers, then Kafka Connect's error headers."""
    return [*(letter.headers or []),
            ("__connect.errors.topic", letter.topic.encode()),
            ("__connect.errors.partition", str(letter.partition).encode()),
            ("__connect.errors.offset", str(letter.offset).encode()),
            ("__connect.errors.exception.message", letter.reason.encode()[:4000]),
            ("__connect.errors.connector.name", CONNECTOR_NAME)]


class DeadLetters:
    """Sends dead letters and tells whether every one of them was acknowledged."""

    def __init__(self, producer: _Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self._pending = 0
        self._failed: list[str] = []

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        self._pending -= 1
        if error is not None:
            offset = dict(message.headers() or []).get("__connect.errors.offset", b"?")
            self._failed.append(f"{error} (dead letter of offset {offset!r})")

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Queue the letters for the dead-letter topic (see :meth:`confirm`)."""
        for letter in letters:
            while True:
                try:
                    self.producer.produce(self.topic, key=letter.key, value=letter.value,
                                          headers=headers(letter), on_delivery=self._delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    self.producer.poll(0.5)
            self._pending += 1
            log.warning("dead letter %s[%s]@%s: %s", letter.topic, letter.partition,
                        letter.offset, letter.reason)

    def confirm(self, timeout: float) -> None:
        """Wait for the delivery reports; raise unless every letter was acknowledged."""
        self.producer.flush(timeout)
        failed, self._failed = self._failed, []
        if failed or self._pending:
            pending, self._pending = self._pending, 0
            raise SinkError(
                f"{len(failed)} dead letters failed and {pending} were not acknowledged within "
                f"{timeout:.0f}s on {self.topic!r} ({'; '.join(failed[:3])}); nothing is "
                "committed, the messages are read again after a restart")
