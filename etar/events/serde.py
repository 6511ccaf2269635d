"""Kafka serialization of events: the UUID key and the Confluent-framed Avro value.

Key wire form: the 16 bytes of the UUID in RFC 4122 (big-endian) order, exactly
``uuid.UUID.bytes``; nothing else, no framing. A null key stays null. Compared with the
36-character text form it halves the key size and keeps partitioning by user stable.

Value wire form: Confluent's framing — magic byte 0, the schema id as a 4-byte big-endian
integer, then the Avro binary body. ``AvroSerializer`` writes it (one record at a time, through
several wrappers); the producer's :class:`EventValueWriter` writes the same bytes for a batch
of records behind a header computed once from the id the registry gave at registration.

The registry client and the settings are imported where they are used: a producer worker,
which only writes values, then starts without them.
"""

from __future__ import annotations

import io
import logging
import struct
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from operator import call, itemgetter
from typing import TYPE_CHECKING, Any, TypeVar

from confluent_kafka.serialization import (
    Deserializer,
    SerializationContext,
    SerializationError,
    Serializer,
)
from fastavro import schemaless_writer

from etar.events.event import (
    ID_TEXT_SIZE,
    OUTCOMES,
    Event,
    Step,
    User,
    load_schema_str,
    parsed_schema,
    schema_field_names,
    step_record,
    to_millis,
)

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

    from etar.config import Settings

log = logging.getLogger(__name__)

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
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from etar.config import get_settings

    settings = settings or get_settings()
    return SchemaRegistryClient({"url": settings.schema_registry_url})


def _event_to_dict(event: Event, ctx: SerializationContext | None) -> dict[str, Any]:
    return event.to_avro()


def event_serializer(client: SchemaRegistryClient) -> AvroSerializer:
    """Avro value serializer that auto-registers ``user_event_schema.avsc``."""
    from confluent_kafka.schema_registry.avro import AvroSerializer

    return AvroSerializer(
        client, load_schema_str(), _event_to_dict, conf={"auto.register.schemas": True}
    )


def value_subject(topic: str) -> str:
    """The subject of a topic's values (``AvroSerializer``'s default naming strategy)."""
    return f"{topic}-value"


def register_event_schema(client: SchemaRegistryClient, topic: str) -> int:
    """Register ``user_event_schema.avsc`` for ``topic``'s values (idempotent); its schema id.

    The text is stripped as ``AvroSerializer`` strips it, so both register the same version.
    """
    from confluent_kafka.schema_registry import Schema

    schema = Schema(load_schema_str().strip(), "AVRO")
    schema_id: int = client.register_schema(value_subject(topic), schema)
    return schema_id


def confluent_header(schema_id: int) -> bytes:
    """The 5 bytes before every Avro body: magic byte 0, then the schema id (big-endian)."""
    return struct.pack(">bI", 0, schema_id)


# --- a schema-compiled Avro record writer --------------------------------------------------

_Encode = Callable[[Any], bytes]
_Out = TypeVar("_Out")
_NULL, _SECOND = b"\x00", b"\x02"  # union branch indexes 0 and 1, zigzag varints
_DOUBLE, _FLOAT = struct.Struct("<d").pack, struct.Struct("<f").pack
_MEMO_SIZE = 4_096
"""Encodings remembered per field, at most: most fields draw from small sets (devices, URLs…)."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _zigzag(value: int) -> bytes:
    return _varint((value << 1) ^ (value >> 63))


_SMALL = tuple(_zigzag(n) for n in range(1_024))


def _integer(bits: int, logical: str | None) -> _Encode:
    low, high = -(1 << (bits - 1)), 1 << (bits - 1)

    def encode(value: Any) -> bytes:
        if logical == "timestamp-millis" and isinstance(value, datetime):
            value = to_millis(value)
        if 0 <= value < 1_024:
            return _SMALL[value]
        if not low <= value < high:
            raise ValueError(f"{value} does not fit an Avro {bits}-bit integer")
        return _zigzag(value)

    return encode


def _string(logical: str | None) -> _Encode:
    def encode(value: Any) -> bytes:
        if logical == "uuid" and isinstance(value, uuid.UUID):
            value = str(value)
        data = value.encode("utf-8")
        return (_SMALL[len(data)] if len(data) < 1_024 else _zigzag(len(data))) + data

    return encode


def _bytes(value: Any) -> bytes:
    return _zigzag(len(value)) + bytes(value)


def _enum(symbols: list[str]) -> _Encode:
    def encode(value: Any) -> bytes:
        try:
            return _SMALL[symbols.index(value)]
        except ValueError:
            raise ValueError(f"{value!r} is not one of the enum's symbols {symbols}") from None

    return encode


def _nullable(inner: _Encode, null_first: bool) -> _Encode:
    null, other = (_NULL, _SECOND) if null_first else (_SECOND, _NULL)

    def encode(value: Any) -> bytes:
        return null if value is None else other + inner(value)

    return encode


_PRIMITIVES: dict[str, _Encode] = {
    "null": lambda value: b"", "boolean": lambda value: b"\x01" if value else b"\x00",
    "double": _DOUBLE, "float": _FLOAT}
_LOGICAL = {("string", "uuid"), ("long", "timestamp-millis")}


def _encoder(schema: Any) -> _Encode:
    """The encoder of one field type; ``ValueError`` for what the compiled writer lacks."""
    if isinstance(schema, list):
        branches = [branch for branch in schema if branch != "null"]
        if len(schema) != 2 or len(branches) != 1:
            raise ValueError(f"union {schema} is not [null, T]")
        return _nullable(_encoder(branches[0]), schema[0] == "null")
    logical = None
    if isinstance(schema, dict):
        if schema["type"] == "enum":
            return _enum(list(schema["symbols"]))
        logical = schema.get("logicalType")
        if logical is not None and (schema["type"], logical) not in _LOGICAL:
            raise ValueError(f"logical type {logical} on {schema['type']}")
        schema = schema["type"]
    if schema in ("int", "long"):
        return _integer(32 if schema == "int" else 64, logical)
    if schema == "string":
        return _string(logical)
    if isinstance(schema, str) and schema in _PRIMITIVES:
        return _PRIMITIVES[schema]
    raise ValueError(f"type {schema!r}")


class _Memo(dict[Any, _Out]):
    """A field's encodings by value: looked up in C, computed on first use.

    Full, it starts afresh: a field of few values never fills it, and one whose values move on
    (timestamps: many events share a millisecond) keeps its recent ones.
    """

    def __init__(self, encode: Callable[[Any], _Out]) -> None:
        super().__init__()
        self._encode = encode

    def __missing__(self, value: Any) -> _Out:
        encoded = self._encode(value)
        if len(self) >= _MEMO_SIZE:
            self.clear()
        self[value] = encoded
        return encoded


class AvroRecordWriter:
    """Avro binary of one flat record schema, compiled to one encoder per field.

    Writes exactly what fastavro's ``schemaless_writer`` writes (a unit test compares them) at
    about a fifth of its cost: the field values are fetched by one ``itemgetter``, and each is
    encoded by a lookup in the field's :class:`_Memo`. Covers records of primitives (not
    bytes), enums, ``[null, T]`` unions and the uuid / timestamp-millis logical types;
    ``ValueError`` at construction for any other schema.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        if schema.get("type") != "record":
            raise ValueError("not a record schema")
        fields = schema["fields"]
        self.field_names = tuple(field["name"] for field in fields)
        self._encoders = tuple(_Memo(_encoder(field["type"])).__getitem__ for field in fields)
        self._values = itemgetter(*(field["name"] for field in fields))
        self._defaults = {field["name"]: field["default"] for field in fields
                          if "default" in field}

    def write(self, record: dict[str, Any], prefix: bytes = b"") -> bytes:
        """``prefix`` (e.g. the Confluent header) followed by the record's Avro body."""
        try:
            values = self._values(record)
        except KeyError:  # fields left out take their defaults (others still raise)
            values = self._values({**self._defaults, **record})
        return prefix + b"".join(map(call, self._encoders, values))

    def encoder(self, name: str) -> _Encode:
        """The (remembering) encoder of field ``name``'s values."""
        return self._encoders[self.field_names.index(name)]


class _StepWriter:
    """Confluent-framed values of the generator's steps (:data:`etar.events.event.Step`), joined
    from fragments that the record writer encoded once: a user's id, currency and
    device + country, a session's id, an outcome's four fields, a product's id and price…
    Only the event id and the parts not seen lately are new per event.
    """

    def __init__(self, writer: AvroRecordWriter, header: bytes) -> None:
        enc = writer.encoder
        self._id_prefix = header + _zigzag(ID_TEXT_SIZE)

        def user(value: User) -> tuple[bytes, bytes, bytes]:
            return (enc("user_id")(value.id_text), enc("currency")(value.currency),
                    enc("device")(value.device) + enc("country")(value.country))

        def outcome(index: int) -> bytes:
            names = ("event_type", "status", "error_code", "error_message")
            return b"".join(enc(name)(part) for name, part in zip(
                names, OUTCOMES[index], strict=True))

        self._users = _Memo(user)
        self._outcomes = _Memo(outcome)
        self._products = _Memo(lambda p: enc("product_id")(p[0]) + enc("price")(p[1]))
        self._no_product = b"".join(enc(name)(None) for name in (
            "product_id", "price", "quantity", "currency"))
        self._sessions = enc("session_id")
        self._quantities = enc("quantity")
        self._queries = enc("search_query")
        self._urls = enc("page_url")
        self._referrers = enc("referrer")
        self._stamps = enc("event_ts")

    def write(self, steps: Sequence[Step], ids: bytes) -> list[bytes]:
        """One value per step; ``ids`` holds their event ids, back to back."""
        users, outcomes, products = self._users, self._outcomes, self._products
        sessions, quantities, queries = self._sessions, self._quantities, self._queries
        urls, referrers, stamps = self._urls, self._referrers, self._stamps
        id_prefix, no_product, size, join = self._id_prefix, self._no_product, ID_TEXT_SIZE, \
            b"".join
        values = []
        start = 0
        for user, session_id, outcome, product, quantity, query, url, referrer, millis in steps:
            user_id, currency, device_country = users[user]
            event_id = ids[start:start + size]
            start += size
            if product is None:
                values.append(join((
                    id_prefix, event_id, user_id, sessions(session_id), outcomes[outcome],
                    no_product, queries(query), device_country, urls(url),
                    referrers(referrer), stamps(millis))))
            else:
                values.append(join((
                    id_prefix, event_id, user_id, sessions(session_id), outcomes[outcome],
                    products[product], quantities(quantity), currency, queries(query),
                    device_country, urls(url), referrers(referrer), stamps(millis))))
        return values


class EventValueWriter:
    """Confluent-framed Avro values of event records (``Event.to_avro`` form), in batches.

    ``schema`` (default: the event schema, parsed) is written by :class:`AvroRecordWriter`,
    or by fastavro's ``schemaless_writer`` when it has types the compiled writer lacks.
    """

    def __init__(self, schema_id: int, schema: dict[str, Any] | None = None) -> None:
        self.schema_id = schema_id
        self._header = confluent_header(schema_id)
        self._schema = parsed_schema() if schema is None else schema
        self._compiled: AvroRecordWriter | None
        self._steps: _StepWriter | None = None
        try:
            self._compiled = AvroRecordWriter(self._schema)
        except ValueError as exc:
            log.warning("values written by fastavro, several times slower (%s)", exc)
            self._compiled = None
        if self._compiled is not None and self._compiled.field_names == schema_field_names():
            self._steps = _StepWriter(self._compiled, self._header)

    def write_steps(self, steps: Sequence[Step], ids: bytes) -> list[bytes]:
        """One framed value per generator step (``EventGenerator.steps``), ``ids`` their event
        ids (``EventGenerator.event_ids``): what ``write`` gives for the same events' records,
        joined from cached fragments when the schema is the event schema's."""
        if self._steps is not None:
            return self._steps.write(steps, ids)
        text = ids.decode("ascii")
        return self.write([step_record(step, text[i * ID_TEXT_SIZE:(i + 1) * ID_TEXT_SIZE])
                           for i, step in enumerate(steps)])

    def write(self, records: Sequence[dict[str, Any]]) -> list[bytes]:
        """One framed value per record."""
        header = self._header
        if self._compiled is not None:
            write = self._compiled.write
            return [write(record, header) for record in records]
        values = []
        for record in records:
            buffer = io.BytesIO()
            buffer.write(header)
            schemaless_writer(buffer, self._schema, record)
            values.append(buffer.getvalue())
        return values


def event_deserializer(client: SchemaRegistryClient, project: bool = False) -> AvroDeserializer:
    """Avro value deserializer that resolves the writer schema by id through the registry.

    With ``project``, records are read through ``user_event_schema.avsc`` as reader schema,
    so data written with a compatible newer or older schema still yields exactly our fields.
    """
    from confluent_kafka.schema_registry.avro import AvroDeserializer

    return AvroDeserializer(client, schema_str=load_schema_str() if project else None)
