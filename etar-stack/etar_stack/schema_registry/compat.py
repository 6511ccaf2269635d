"""Avro schema parsing and compatibility levels, on top of the ``avro`` package's checker."""

from __future__ import annotations

import json
from enum import StrEnum

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.errors import AvroException


class Level(StrEnum):
    """Confluent's compatibility levels."""

    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"

    @property
    def transitive(self) -> bool:
        return self.value.endswith("_TRANSITIVE")


class InvalidSchema(ValueError):
    """The text is not a valid Avro schema."""


def parse(schema_str: str) -> avro.schema.Schema:
    """Parse an Avro schema, with names and defaults validated."""
    try:
        return avro.schema.parse(schema_str, validate_enum_symbols=True, validate_names=True)
    except (AvroException, ValueError, TypeError) as exc:
        raise InvalidSchema(f"Invalid schema: {exc}") from exc


def canonical(schema_str: str, normalize: bool = False) -> str:
    """The form two registrations are compared in.

    Compact JSON of the schema as given; with ``normalize``, Avro's Parsing Canonical Form
    (so formatting, docs and field order of attributes no longer matter).
    """
    parsed = parse(schema_str)
    if normalize:
        return json.dumps(parsed.to_canonical_json(), separators=(",", ":"))
    return json.dumps(json.loads(schema_str), separators=(",", ":"))


def _can_read(reader: avro.schema.Schema, writer: avro.schema.Schema) -> list[str]:
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    return sorted(str(m) for m in result.messages) or [str(result.incompatibilities)]


def incompatibilities(new: str, existing: list[str], level: Level) -> list[str]:
    """Why ``new`` breaks ``level`` against ``existing`` (oldest first); empty when it does not.

    Non-transitive levels only look at the newest of ``existing``.
    """
    if level is Level.NONE or not existing:
        return []
    candidate = parse(new)
    others = existing if level.transitive else existing[-1:]
    problems: list[str] = []
    for old_str in reversed(others):
        old = parse(old_str)
        if level.value.startswith(("BACKWARD", "FULL")):
            problems += [f"reader(new) vs writer(old): {m}" for m in _can_read(candidate, old)]
        if level.value.startswith(("FORWARD", "FULL")):
            problems += [f"reader(old) vs writer(new): {m}" for m in _can_read(old, candidate)]
    return problems
