"""The multi-process producer end to end against the native stack's broker and registry.

Every test produces to a topic of its own (``own_topic``), so counts are exact even while
another producer (``make up``'s) writes to the shared topic.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext

from etar.config import Settings
from etar.events.event import (
    Event,
    EventGenerator,
    GeneratorConfig,
    clock_within_minute,
    uniform_error_rates,
)
from etar.events.serde import (
    EventValueWriter,
    UUIDKeyDeserializer,
    event_deserializer,
    event_serializer,
    register_event_schema,
    registry_client,
    value_subject,
)
from etar.minute import Minute
from etar.topics import admin, ensure_topic, watermarks
from tests.integration.lanes import env_for, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def own_topic(stack_settings: Settings, unique: str) -> Iterator[Settings]:
    """Settings whose topic (3 partitions) is this test's only; deleted afterwards."""
    settings = stack_settings.model_copy(update={"kafka_topic": f"producer_{unique}"})
    ensure_topic(settings, settings.kafka_topic, 3)
    yield settings
    client = admin(settings)  # kept alive until its futures are done
    for future in client.delete_topics([settings.kafka_topic]).values():
        future.result(timeout=30)
    registry, subject = registry_client(settings), value_subject(settings.kafka_topic)
    if subject in registry.get_subjects():
        registry.delete_subject(subject)
        registry.delete_subject(subject, permanent=True)


def _consumer(settings: Settings) -> Consumer:
    return Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                     "group.id": f"test-{settings.kafka_topic}", "enable.auto.commit": False})


def _end_offsets(consumer: Consumer, topic: str) -> dict[int, int]:
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    return {p: watermarks(consumer, topic, p)[1] for p in partitions}


def _read_all(settings: Settings) -> list[Message]:
    """Every message of the topic (it is the test's own: from offset 0 to the end)."""
    consumer = _consumer(settings)
    try:
        end = _end_offsets(consumer, settings.kafka_topic)
        consumer.assign([TopicPartition(settings.kafka_topic, p, 0) for p in end])
        messages: list[Message] = []
        while len(messages) < sum(end.values()):
            message = consumer.poll(10)
            assert message is not None, f"timed out after {len(messages)} messages"
            assert message.error() is None, message.error()
            messages.append(message)
        return messages
    finally:
        consumer.close()


def _summary(stdout: str) -> dict[str, str]:
    line = stdout.strip().splitlines()[-1]
    return dict(item.split("=", 1) for item in line.split())


def _etar(settings: Settings | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = env_for(settings) if settings is not None else None
    return subprocess.run([sys.executable, "-m", "etar", *args], capture_output=True, text=True,
                          timeout=300, check=False, env=env)


def test_two_processes_deliver_exactly_n_decodable_events(own_topic: Settings) -> None:
    count, seed, minute = 3_001, 7, Minute.parse("2026-01-01T10:30")
    result = _etar(own_topic, "produce", "--count", str(count), "--processes", "2",
                   "--rate", "0", "--seed", str(seed), "--minute", str(minute))
    assert result.returncode == 0, result.stderr
    summary = _summary(result.stdout)
    assert summary["sent"] == summary["delivered"] == str(count)
    assert summary["failed"] == "0" and summary["processes"] == "2"
    messages = _read_all(own_topic)
    assert len(messages) == count

    # Values: Confluent framing with the id registered for the topic's values, decoded by
    # confluent-kafka's AvroDeserializer through the registry. Keys: the user id's 16 bytes.
    client = registry_client(own_topic)
    schema_id = client.get_latest_version(value_subject(own_topic.kafka_topic)).schema_id
    values = event_deserializer(client)
    keys = UUIDKeyDeserializer()
    context = SerializationContext(own_topic.kafka_topic, MessageField.VALUE)
    events = {}
    for message in messages:
        assert message.value()[:5] == b"\x00" + schema_id.to_bytes(4, "big")
        event = values(message.value(), context)
        assert keys(message.key()) == event["user_id"]
        assert minute.start <= event["event_ts"] < minute.end
        assert (event["status"] == "ERROR") == (event["error_code"] is not None)
        events[event["event_id"]] = event
    assert len(events) == count

    # Exactly each worker's share of the seeded stream (worker i: seed * 1000 + i), no more.
    expected = []
    for index, share in enumerate((1_501, 1_500)):
        worker_seed = seed * 1_000 + index
        clock = clock_within_minute(minute, random.Random(worker_seed))
        expected += EventGenerator(GeneratorConfig(seed=worker_seed), clock).take(share)
    assert {e.event_id: e.to_avro() for e in expected} == {
        event_id: {**event, "event_id": str(event_id), "user_id": str(event["user_id"]),
                   "session_id": str(event["session_id"])}
        for event_id, event in events.items()}


def test_values_are_byte_for_byte_what_avro_serializer_writes(own_topic: Settings) -> None:
    """The producer's writer and confluent-kafka's ``AvroSerializer`` agree, schema id too."""
    client = registry_client(own_topic)
    schema_id = register_event_schema(client, own_topic.kafka_topic)
    serializer = event_serializer(client)
    context = SerializationContext(own_topic.kafka_topic, MessageField.VALUE)
    clock = clock_within_minute(Minute.parse("2026-01-01T10:30"), random.Random(5))
    generator = EventGenerator(GeneratorConfig(seed=5, error_rates=uniform_error_rates(0.3)),
                               clock)
    keyed = generator.records(2_000)
    values = EventValueWriter(schema_id).write([record for _, record in keyed])
    for (_, record), value in zip(keyed, values, strict=True):
        assert serializer(Event.from_avro(record), context) == value
    assert len(client.get_versions(value_subject(own_topic.kafka_topic))) == 1


def test_rate_is_held_and_never_exceeded(own_topic: Settings) -> None:
    """2,000 events at 2,000 ev/s: their create times span 2 s (a little more on a busy
    machine, never less: no event goes before it is due)."""
    count, rate = 2_000, 2_000
    result = _etar(own_topic, "produce", "--count", str(count), "--rate", str(rate),
                   "--seed", "3")
    assert result.returncode == 0, result.stderr
    stamps = sorted(message.timestamp()[1] for message in _read_all(own_topic))
    assert len(stamps) == count
    span_s = (stamps[-1] - stamps[0]) / 1_000
    expected = (count - 1) / rate
    assert expected - 0.002 <= span_s <= expected * 1.5, span_s  # ms stamps: 2 ms of slack
    # Evenly spread: the first half went no faster than the rate either, nor far slower.
    half_s = (stamps[count // 2] - stamps[0]) / 1_000
    assert (count // 2) / rate - 0.002 <= half_s <= expected * 0.5 + 1.0, half_s


def test_start_at_holds_every_event_back_until_then(own_topic: Settings) -> None:
    """Workers that are ready wait for ``--start-at``: no event is stamped or sent before it
    (the capacity benchmark starts each minute's producer early with it)."""
    start = datetime.fromtimestamp(time.time() + 4, UTC).replace(microsecond=0)
    result = _etar(own_topic, "produce", "--count", "500", "--rate", "0", "--processes", "2",
                   "--start-at", start.replace(tzinfo=None).isoformat())
    assert result.returncode == 0, result.stderr
    messages = _read_all(own_topic)
    assert len(messages) == 500
    assert min(message.timestamp()[1] for message in messages) >= start.timestamp() * 1_000
    values = event_deserializer(registry_client(own_topic))
    context = SerializationContext(own_topic.kafka_topic, MessageField.VALUE)
    assert min(values(message.value(), context)["event_ts"] for message in messages) >= start


def test_bad_settings_fail_fast_with_a_reason() -> None:  # no stack needed
    negative = _etar(None, "produce", "--rate", "-5", "--count", "1")
    assert negative.returncode == 1 and "--rate must be >= 0" in negative.stderr
    bad_minute = _etar(None, "produce", "--minute", "yesterday", "--count", "1")
    assert bad_minute.returncode == 1 and "is not a minute" in bad_minute.stderr
    bad_start = _etar(None, "produce", "--start-at", "soon", "--count", "1")
    assert bad_start.returncode == 1 and "--start-at wants an ISO 8601" in bad_start.stderr


def test_unreachable_broker_fails_fast() -> None:  # no stack needed
    env = {**os.environ, "ETAR_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    result = subprocess.run([sys.executable, "-m", "etar", "produce", "--count", "1"],
                            capture_output=True, text=True, timeout=60, env=env, check=False)
    assert result.returncode == 1
    assert "unreachable" in result.stderr and "etar stack up" in result.stderr


def test_sigterm_flushes_and_leaves_no_producer_behind(own_topic: Settings) -> None:
    """Stopped like Ctrl-C: every sent event is delivered, and nothing produces afterwards."""
    topic = own_topic.kafka_topic
    consumer = _consumer(own_topic)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "etar", "produce", "--rate", "400", "--processes", "2",
             "--minute", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(own_topic))
        # Stop it once it is producing (bounded: start-up is slower on a busy machine).
        wait_for(lambda: sum(_end_offsets(consumer, topic).values()) > 0, 90,
                 "the producer to start sending")
        time.sleep(2)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=90)
        assert process.returncode == 0, err
        summary = _summary(out)
        assert int(summary["delivered"]) == int(summary["sent"]) > 0
        after = sum(_end_offsets(consumer, topic).values())
        assert after == int(summary["delivered"])
        time.sleep(3)
        assert sum(_end_offsets(consumer, topic).values()) == after  # no orphan kept going
    finally:
        consumer.close()
