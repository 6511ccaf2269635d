"""The UUID key serializer."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.serialization import SerializationError

from etar.serde import UUIDKeyDeserializer, UUIDKeySerializer


def test_uuid_key_round_trip_is_16_raw_bytes() -> None:
    for _ in range(100):
        value = uuid.uuid4()
        raw = UUIDKeySerializer()(value)
        assert raw == value.bytes and len(raw) == 16
        assert UUIDKeyDeserializer()(raw) == value


def test_text_uuid_is_accepted_and_null_stays_null() -> None:
    value = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert UUIDKeySerializer()(str(value)) == bytes.fromhex("12345678123456781234567812345678")
    assert UUIDKeySerializer()(None) is None
    assert UUIDKeyDeserializer()(None) is None


def test_bad_keys_are_refused_with_a_reason() -> None:
    with pytest.raises(SerializationError, match="not a UUID"):
        UUIDKeySerializer()("user-42")
    with pytest.raises(SerializationError, match="16 bytes"):
        UUIDKeyDeserializer()(b"\x00" * 15)
