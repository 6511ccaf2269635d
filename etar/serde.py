"""Kafka serialization of events: the UUID key and the Confluent-framed Avro value.

Key wire form: the 16 bytes of the UUID in RFC 4122 (big-endian) order, exactly
``uuid.UUID.bytes``; nothing else, no framing. A null key stays null. Compared with the
36-character text form it halves the key size and keeps partitioning by user stable.

Value wire form: Confluent's framing from ``AvroSerializer`` — magic byte 0, the schema id as
a 4-byte big-endian integer, then the Avro binary body.
"""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import (
    Deserializer,
    SerializationContext,
    SerializationError,
    Serializer,
)

from etar.config import Settings, get_settings
from etar.events import Event, load_schema_str

UUID_KEY_SIZE = 16


class UUIDKeySerializer(Serializer):  # type: ignore[misc]
    """Serializes a UUID (or its text form) to its 16 raw bytes."""

    def __call__(self, obj: uuid.UUID | str | None, ctx: SerializationContext | None = None
                 ) -> bytes | None:
        if obj is None:
            return None
        try:
            value = obj if isinstance(obj, uuid.UUID) else uuid.UUID(str(obj))
        except ValueError as exc:
            raise SerializationError(f"key is not a UUID: {obj!r}") from exc
        return value.bytes


class UUIDKeyDeserializer(Deserializer):  # type: ignore[misc]
    """Reads the 16 raw bytes written by :class:`UUIDKeySerializer` back into a UUID."""

    def __call__(self, value: bytes | None, ctx: SerializationContext | None = None
                 ) -> uuid.UUID | None:
        if value is None:
            return None
        if len(value) != UUID_KEY_SIZE:
            raise SerializationError(f"a UUID key has {UUID_KEY_SIZE} bytes, got {len(value)}")
        return uuid.UUID(bytes=value)


def registry_client(settings: Settings | None = None) -> SchemaRegistryClient:
    """A Schema Registry client for ``settings.schema_registry_url``."""
    settings = settings or get_settings()
    return SchemaRegistryClient({"url": settings.schema_registry_url})


def _event_to_dict(event: Event, ctx: SerializationContext | None) -> dict[str, Any]:
    return event.to_avro()


def event_serializer(client: SchemaRegistryClient) -> AvroSerializer:
    """Avro value serializer that auto-registers ``user_event_schema.avsc``."""
    return AvroSerializer(
        client, load_schema_str(), _event_to_dict, conf={"auto.register.schemas": True}
    )


def event_deserializer(client: SchemaRegistryClient, project: bool = False) -> AvroDeserializer:
    """Avro value deserializer that resolves the writer schema by id through the registry.

    With ``project``, records are read through ``user_event_schema.avsc`` as reader schema,
    so data written with a compatible newer or older schema still yields exactly our fields.
    """
    return AvroDeserializer(client, schema_str=load_schema_str() if project else None)
