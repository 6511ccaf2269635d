"""The multi-process producer end to end against the native stack's broker and registry."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext

from etar.config import Settings
from etar.serde import UUIDKeyDeserializer, event_deserializer, registry_client
from tests.integration.lanes import wait_for

pytestmark = pytest.mark.integration


def _end_offsets(consumer: Consumer, topic: str) -> dict[int, int]:
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions}


def _read_range(consumer: Consumer, topic: str, start: dict[int, int], end: dict[int, int]
                ) -> list:
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in start.items()])
    expected = sum(end[p] - start[p] for p in end)
    messages = []
    while len(messages) < expected:
        message = consumer.poll(10)
        assert message is not None, f"timed out after {len(messages)}/{expected} messages"
        assert message.error() is None, message.error()
        if message.offset() < end[message.partition()]:
            messages.append(message)
    return messages


def _summary(stdout: str) -> dict[str, str]:
    line = stdout.strip().splitlines()[-1]
    return dict(item.split("=", 1) for item in line.split())


def _etar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "etar", *args], capture_output=True, text=True,
                          timeout=300, check=False)


def test_two_processes_deliver_exactly_n_decodable_events(stack_settings: Settings) -> None:
    count, topic = 3_001, stack_settings.kafka_topic
    consumer = Consumer({"bootstrap.servers": stack_settings.kafka_bootstrap_servers,
                         "group.id": f"test-producer-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    try:
        before = _end_offsets(consumer, topic)
        result = _etar("produce", "--count", str(count), "--processes", "2", "--rate", "0",
                       "--seed", "7", "--minute", "2026-01-01T10:30")
        assert result.returncode == 0, result.stderr
        summary = _summary(result.stdout)
        assert summary["sent"] == summary["delivered"] == str(count)
        assert summary["failed"] == "0" and summary["processes"] == "2"
        after = _end_offsets(consumer, topic)
        assert sum(after.values()) - sum(before.values()) == count
        messages = _read_range(consumer, topic, before, after)
    finally:
        consumer.close()

    values = event_deserializer(registry_client(stack_settings))
    keys = UUIDKeyDeserializer()
    minute = datetime(2026, 1, 1, 10, 30, tzinfo=UTC)
    event_ids = set()
    for message in messages:
        event = values(message.value(), SerializationContext(topic, MessageField.VALUE))
        assert keys(message.key()) == event["user_id"]
        assert minute <= event["event_ts"] < minute.replace(minute=31)
        assert (event["status"] == "ERROR") == (event["error_code"] is not None)
        event_ids.add(event["event_id"])
    assert len(event_ids) == count
    assert all(message.value()[0] == 0 for message in messages)  # Confluent magic byte


def test_bad_settings_fail_fast_with_a_reason(stack_settings: Settings) -> None:
    negative = _etar("produce", "--rate", "-5", "--count", "1")
    assert negative.returncode == 1 and "--rate must be >= 0" in negative.stderr
    bad_minute = _etar("produce", "--minute", "yesterday", "--count", "1")
    assert bad_minute.returncode == 1 and "is not a minute" in bad_minute.stderr


def test_unreachable_broker_fails_fast(tmp_path) -> None:  # no stack needed
    import os

    env = {**os.environ, "ETAR_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    result = subprocess.run([sys.executable, "-m", "etar", "produce", "--count", "1"],
                            capture_output=True, text=True, timeout=60, env=env, check=False)
    assert result.returncode == 1
    assert "unreachable" in result.stderr and "etar stack up" in result.stderr


def test_sigterm_flushes_and_leaves_no_producer_behind(stack_settings: Settings) -> None:
    """Stopped like Ctrl-C: every sent event is delivered, and nothing produces afterwards."""
    topic = stack_settings.kafka_topic
    consumer = Consumer({"bootstrap.servers": stack_settings.kafka_bootstrap_servers,
                         "group.id": f"test-sigterm-{uuid.uuid4()}"})
    try:
        before = sum(_end_offsets(consumer, topic).values())
        process = subprocess.Popen(
            [sys.executable, "-m", "etar", "produce", "--rate", "400", "--processes", "2",
             "--minute", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Stop it once it is producing (bounded: start-up is slower on a busy machine).
        wait_for(lambda: sum(_end_offsets(consumer, topic).values()) > before, 90,
                 "the producer to start sending")
        time.sleep(2)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        summary = _summary(out)
        assert int(summary["delivered"]) == int(summary["sent"]) > 0
        after = sum(_end_offsets(consumer, topic).values())
        assert after - before == int(summary["delivered"])
        time.sleep(3)
        assert sum(_end_offsets(consumer, topic).values()) == after  # no orphan kept going
    finally:
        consumer.close()
