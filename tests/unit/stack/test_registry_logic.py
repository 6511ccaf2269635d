"""The registry's compatibility rules and its log replay, without any service."""

from __future__ import annotations

import json

import pytest

from etar_stack.schema_registry import compat
from etar_stack.schema_registry.compat import Level
from etar_stack.schema_registry.store import State

V1 = json.dumps({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]})
V2_DEFAULT = json.dumps({"type": "record", "name": "R", "fields": [
    {"name": "a", "type": "int"}, {"name": "b", "type": "string", "default": ""}]})
V2_REQUIRED = json.dumps({"type": "record", "name": "R", "fields": [
    {"name": "a", "type": "int"}, {"name": "b", "type": "string"}]})


@pytest.mark.parametrize("level, new, compatible", [
    (Level.BACKWARD, V2_DEFAULT, True),
    (Level.BACKWARD, V2_REQUIRED, False),
    (Level.FORWARD, V2_REQUIRED, True),
    (Level.FULL, V2_DEFAULT, True),
    (Level.FULL, V2_REQUIRED, False),
    (Level.NONE, json.dumps({"type": "string"}), True),
])
def test_levels(level: Level, new: str, compatible: bool) -> None:
    assert (compat.incompatibilities(new, [V1], level) == []) is compatible


def test_transitive_levels_look_at_every_version() -> None:
    v2 = json.dumps({"type": "record", "name": "R", "fields": []})
    v3 = json.dumps({"type": "record", "name": "R", "fields": [
        {"name": "a", "type": "string", "default": ""}]})
    assert compat.incompatibilities(v3, [V1, v2], Level.BACKWARD) == []
    assert compat.incompatibilities(v3, [V1, v2], Level.BACKWARD_TRANSITIVE) != []


def test_invalid_schema_is_reported() -> None:
    with pytest.raises(compat.InvalidSchema, match="Invalid schema"):
        compat.parse('{"type": "record", "name": "R"}')


def test_normalized_form_ignores_formatting_and_docs() -> None:
    pretty = json.dumps(json.loads(V1), indent=4)
    documented = json.dumps({**json.loads(V1), "doc": "a record"})
    assert compat.canonical(pretty) == compat.canonical(V1)
    assert compat.canonical(documented) != compat.canonical(V1)
    assert compat.canonical(documented, normalize=True) == compat.canonical(V1, normalize=True)


def test_state_replays_the_log() -> None:
    state = State()
    key = {"keytype": "SCHEMA", "subject": "s", "version": 1, "magic": 1}
    state.apply(key, {"subject": "s", "version": 1, "id": 7, "schema": V1, "deleted": False})
    state.apply({**key, "version": 2},
                {"subject": "s", "version": 2, "id": 8, "schema": V2_DEFAULT, "deleted": False})
    state.apply({"keytype": "CONFIG", "subject": "s", "magic": 0}, {"compatibilityLevel": "FULL"})
    state.apply({**key, "version": 2}, None)
    assert list(state.subjects["s"]) == [1]
    assert state.schemas[8] == V2_DEFAULT  # ids are never reused
    assert state.subject_levels["s"] is Level.FULL
    state.apply({"keytype": "CONFIG", "subject": None, "magic": 0},
                {"compatibilityLevel": "NONE"})
    assert state.global_level is Level.NONE


class _FlakyConsumer:
    """Fails like a broker whose new topic has no leader yet, then answers."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = errors

    def get_watermark_offsets(self, partition: object, timeout: float) -> tuple[int, int]:
        from confluent_kafka import KafkaError, KafkaException

        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 0, 7


def test_the_schemas_log_waits_for_its_leader(monkeypatch: pytest.MonkeyPatch) -> None:
    from confluent_kafka import KafkaError

    from etar import topics

    monkeypatch.setattr(topics.time, "sleep", lambda _s: None)
    consumer = _FlakyConsumer([KafkaError._UNKNOWN_PARTITION,
                               KafkaError.NOT_LEADER_FOR_PARTITION])
    assert topics.watermarks(consumer, "_schemas") == (0, 7)  # type: ignore[arg-type]


def test_the_schemas_log_does_not_retry_what_waiting_cannot_fix() -> None:
    from confluent_kafka import KafkaError, KafkaException

    from etar import topics

    consumer = _FlakyConsumer([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException):
        topics.watermarks(consumer, "_schemas")  # type: ignore[arg-type]
