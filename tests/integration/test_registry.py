"""Conformance of etar's schema registry, driven by Confluent's own Python client."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from etar.config import Settings
from etar.events.event import load_schema_str
from etar.topics import delete_topics, ensure_topic, watermarks
from etar_stack import stack
from etar_stack.schema_registry.store import RegistryError, SchemaStore
from tests.integration.lanes import wait_for

pytestmark = pytest.mark.integration

V1 = {"type": "record", "name": "Probe", "namespace": "test.etar",
      "fields": [{"name": "id", "type": "string"}]}
V2_OPTIONAL = {**V1, "fields": [*V1["fields"],
                                {"name": "note", "type": ["null", "string"], "default": None}]}
V2_REQUIRED = {**V1, "fields": [*V1["fields"], {"name": "count", "type": "int"}]}


def avro(schema: dict) -> Schema:
    return Schema(json.dumps(schema), "AVRO")


@pytest.fixture
def client(stack_settings: Settings) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": stack_settings.schema_registry_url})


@pytest.fixture
def subject(client: SchemaRegistryClient, unique: str) -> Iterator[str]:
    name = f"probe-{unique}-value"
    yield name
    for permanent in (False, True):
        with contextlib.suppress(SchemaRegistryError):
            client.delete_subject(name, permanent=permanent)


def test_register_fetch_lookup_versions_latest(client: SchemaRegistryClient, subject: str
                                              ) -> None:
    registered = client.register_schema_full_response(subject, avro(V1))
    assert registered.schema_id > 0 and registered.version == 1
    fetched = client.get_schema(registered.schema_id)
    assert json.loads(fetched.schema_str) == V1
    found = client.lookup_schema(subject, avro(V1))
    assert (found.schema_id, found.version, found.subject) == (registered.schema_id, 1, subject)
    assert client.get_versions(subject) == [1]
    latest = client.get_latest_version(subject)
    assert (latest.version, latest.schema_id) == (1, registered.schema_id)
    assert subject in client.get_subjects()
    # Registering the same schema again is idempotent.
    assert client.register_schema(subject, avro(V1)) == registered.schema_id
    assert client.get_versions(subject) == [1]


def test_same_schema_in_two_subjects_shares_its_id(client: SchemaRegistryClient, subject: str
                                                   ) -> None:
    first = client.register_schema(subject, avro(V1))
    other = subject.replace("-value", "-key")
    try:
        assert client.register_schema(other, avro(V1)) == first
    finally:
        client.delete_subject(other)
        client.delete_subject(other, permanent=True)


def test_backward_compatible_v2_accepted_incompatible_rejected_with_409(
    client: SchemaRegistryClient, subject: str
) -> None:
    assert client.get_compatibility() == "BACKWARD"
    v1 = client.register_schema(subject, avro(V1))
    assert client.test_compatibility(subject, avro(V2_OPTIONAL)) is True
    assert client.test_compatibility(subject, avro(V2_REQUIRED)) is False
    v2 = client.register_schema(subject, avro(V2_OPTIONAL))
    assert v2 != v1
    assert client.get_versions(subject) == [1, 2]
    with pytest.raises(SchemaRegistryError) as rejected:
        client.register_schema(subject, avro(V2_REQUIRED))
    assert rejected.value.http_status_code == 409
    assert rejected.value.error_code == 409
    assert client.get_versions(subject) == [1, 2]


def test_forward_full_and_none_levels(client: SchemaRegistryClient, subject: str) -> None:
    client.register_schema(subject, avro(V1))
    client.set_compatibility(subject, "FORWARD")
    assert client.get_compatibility(subject) == "FORWARD"
    # A new required field is fine for FORWARD (old readers ignore it)...
    assert client.test_compatibility(subject, avro(V2_REQUIRED)) is True
    # ...but dropping a field old readers need without a default is not.
    dropped = {**V1, "fields": []}
    assert client.test_compatibility(subject, avro(dropped)) is False
    client.set_compatibility(subject, "FULL")
    assert client.test_compatibility(subject, avro(V2_REQUIRED)) is False
    assert client.test_compatibility(subject, avro(V2_OPTIONAL)) is True
    client.set_compatibility(subject, "NONE")
    assert client.register_schema(subject, avro(dropped)) > 0


def test_transitive_checks_every_version(client: SchemaRegistryClient, subject: str) -> None:
    client.set_compatibility(subject, "BACKWARD_TRANSITIVE")
    client.register_schema(subject, avro(V1))
    # v2 drops `id`: new readers simply ignore it in old data.
    client.register_schema(subject, avro({**V1, "fields": []}))
    # v3 brings `id` back as an int with a default: fine for v2 data, not for v1's strings.
    v3 = {**V1, "fields": [{"name": "id", "type": "int", "default": 0}]}
    assert client.test_compatibility(subject, avro(v3), version=2) is True
    assert client.test_compatibility_all_versions(subject, avro(v3)) is False
    client.set_compatibility(subject, "BACKWARD")
    assert client.test_compatibility_all_versions(subject, avro(v3)) is True


def test_error_codes(client: SchemaRegistryClient, subject: str) -> None:
    with pytest.raises(SchemaRegistryError) as missing_subject:
        client.get_latest_version(subject)
    assert missing_subject.value.error_code == 40401
    client.register_schema(subject, avro(V1))
    with pytest.raises(SchemaRegistryError) as missing_version:
        client.get_version(subject, 7)
    assert missing_version.value.error_code == 40402
    with pytest.raises(SchemaRegistryError) as missing_schema:
        client.lookup_schema(subject, avro(V2_OPTIONAL))
    assert missing_schema.value.error_code == 40403
    with pytest.raises(SchemaRegistryError) as missing_id:
        client.get_schema(987_654_321)
    assert missing_id.value.error_code == 40403
    with pytest.raises(SchemaRegistryError) as invalid:
        client.register_schema(subject, Schema('{"type": "record", "name": "x"}', "AVRO"))
    assert invalid.value.error_code == 42201
    with pytest.raises(SchemaRegistryError) as level:
        client.set_compatibility(subject, "SIDEWAYS")
    assert level.value.error_code == 42203


def test_soft_then_permanent_delete(client: SchemaRegistryClient, subject: str) -> None:
    client.register_schema(subject, avro(V1))
    client.register_schema(subject, avro(V2_OPTIONAL))
    with pytest.raises(SchemaRegistryError) as not_soft_deleted:
        client.delete_subject(subject, permanent=True)
    assert not_soft_deleted.value.error_code == 40405
    assert client.delete_version(subject, 2) == 2
    assert client.get_versions(subject) == [1]
    assert client.delete_subject(subject) == [1]
    assert subject not in client.get_subjects()
    assert client.delete_subject(subject, permanent=True) == [1, 2]


def test_raw_http_matches_confluent_shapes(stack_settings: Settings, subject: str) -> None:
    url, media = stack_settings.schema_registry_url, "application/vnd.schemaregistry.v1+json"
    body = {"schema": json.dumps(V1)}
    response = httpx.post(f"{url}/subjects/{subject}/versions", json=body,
                          headers={"Content-Type": media})
    assert response.status_code == 200 and response.headers["content-type"].startswith(media)
    schema_id = response.json()["id"]
    assert httpx.get(f"{url}/schemas/ids/{schema_id}/versions").json() == [
        {"subject": subject, "version": 1}]
    assert httpx.get(f"{url}/subjects/{subject}/versions/latest/schema").json() == V1
    missing = httpx.get(f"{url}/subjects/{subject}-nope/versions")
    assert missing.status_code == 404 and missing.json()["error_code"] == 40401
    assert httpx.get(f"{url}/config").json() == {"compatibilityLevel": "BACKWARD"}


def test_event_schema_registers_with_nested_logical_types(client: SchemaRegistryClient,
                                                          subject: str) -> None:
    registered = client.register_schema(subject, Schema(load_schema_str(), "AVRO"))
    stored = json.loads(client.get_schema(registered).schema_str)
    event_ts = next(f for f in stored["fields"] if f["name"] == "event_ts")
    assert event_ts["type"] == {"type": "long", "logicalType": "timestamp-millis"}


def test_ids_survive_a_registry_restart(stack_settings: Settings, client: SchemaRegistryClient,
                                        subject: str, unique: str) -> None:
    """A fresh registry process rebuilds the same ids from the `_schemas` topic alone."""
    first = client.register_schema(subject, avro(V1))
    second = client.register_schema(subject, avro(V2_OPTIONAL))
    client.set_compatibility(subject, "FULL")
    with socket.socket() as probe:  # a free port for the second registry
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "ETAR_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{port}",
           "ETAR_KAFKA_BOOTSTRAP_SERVERS": stack_settings.kafka_bootstrap_servers}
    process = subprocess.Popen([sys.executable, "-m", "etar_stack.schema_registry"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        fresh = SchemaRegistryClient({"url": f"http://127.0.0.1:{port}"})
        deadline = time.monotonic() + 60
        while True:
            try:
                fresh.get_subjects()
                break
            except Exception:
                assert process.poll() is None, "the second registry exited"
                assert time.monotonic() < deadline, "the second registry did not come up"
                time.sleep(0.5)
        assert fresh.lookup_schema(subject, avro(V1)).schema_id == first
        assert fresh.get_version(subject, 2).schema_id == second
        assert json.loads(fresh.get_schema(second).schema_str) == V2_OPTIONAL
        assert fresh.get_compatibility(subject) == "FULL"
        # A schema registered after the restart gets a new id, never a reused one.
        third = fresh.register_schema(f"probe-{unique}-other", avro(V2_REQUIRED))
        assert third > max(first, second)
    finally:
        process.terminate()
        process.wait(30)


OTHER = {"type": "record", "name": "Other", "namespace": "test.etar",
         "fields": [{"name": "n", "type": "long"}]}


@pytest.fixture
def schemas_topic(stack_settings: Settings, unique: str) -> Iterator[str]:
    """A `_schemas` log of the test's own (the stack's registry never reads it)."""
    topic = f"_schemas_{unique}"
    ensure_topic(stack_settings, topic, 1, {"cleanup.policy": "compact"})
    yield topic
    delete_topics(stack_settings, [topic, f"{topic}_compacted"])


@contextlib.contextmanager
def _broker_frozen(settings: Settings) -> Iterator[None]:
    """SIGSTOP the stack's broker: requests sent meanwhile are answered once it resumes."""
    state = stack(settings).read_state()
    assert state is not None, "the stack's supervisor is not running"
    pid = int(state["services"]["kafka"])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _records(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "group.id": f"reader-{uuid.uuid4()}"})
    try:
        _, high = watermarks(consumer, topic)
        consumer.assign([TopicPartition(topic, 0, 0)])
        records: list[tuple[bytes | None, bytes | None]] = []
        deadline = time.monotonic() + 30
        while len(records) < high and time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is not None and message.error() is None:
                records.append((message.key(), message.value()))
        assert len(records) == high
        return records
    finally:
        consumer.close()


def test_a_registration_that_timed_out_and_landed_late_keeps_its_id(
        stack_settings: Settings, schemas_topic: str) -> None:
    """The broker acknowledges a registration only after the registry answered 50002; the
    record lands anyway. The next registration must not take its id (before, both got id 2
    and the log held two schemas under one id), and a retry finds the late one."""
    store = SchemaStore(stack_settings.kafka_bootstrap_servers, schemas_topic, timeout=3)
    store.load()
    try:
        first = store.register("a-value", json.dumps(V1))
        with _broker_frozen(stack_settings), pytest.raises(RegistryError) as timed_out:
            store.register("b-value", json.dumps(V2_REQUIRED))
        assert timed_out.value.error_code == 50002
        wait_for(lambda: len(_records(stack_settings, schemas_topic)) == 2, 30,
                 "the late registration to land")
        third = store.register("c-value", json.dumps(OTHER))
        late = store.lookup("b-value", json.dumps(V2_REQUIRED))
        assert len({first.schema_id, late.schema_id, third.schema_id}) == 3
        retried = store.register("b-value", json.dumps(V2_REQUIRED))
        assert (retried.schema_id, retried.version) == (late.schema_id, late.version)
    finally:
        store.close()
    fresh = SchemaStore(stack_settings.kafka_bootstrap_servers, schemas_topic)
    fresh.load()
    try:  # the log alone gives one schema per id
        assert json.loads(fresh.schema(late.schema_id)) == V2_REQUIRED
        assert json.loads(fresh.schema(third.schema_id)) == OTHER
    finally:
        fresh.close()


def test_ids_of_hard_deleted_schemas_stay_taken_after_compaction_and_restart(
        stack_settings: Settings, schemas_topic: str) -> None:
    """Compaction keeps the last record per key and drops tombstones after
    ``delete.retention.ms``: a hard-deleted version leaves nothing behind. A registry started
    on such a log must still not hand its id out again."""
    store = SchemaStore(stack_settings.kafka_bootstrap_servers, schemas_topic)
    store.load()
    try:
        kept = store.register("kept-value", json.dumps(V1))
        gone = store.register("gone-value", json.dumps(OTHER))
        store.delete_subject("gone-value", permanent=False)
        store.delete_subject("gone-value", permanent=True)
    finally:
        store.close()
    last: dict[bytes | None, bytes | None] = {}
    for key, value in _records(stack_settings, schemas_topic):  # what compaction leaves
        last.pop(key, None)
        last[key] = value
    compacted = f"{schemas_topic}_compacted"
    ensure_topic(stack_settings, compacted, 1, {"cleanup.policy": "compact"})
    producer = Producer({"bootstrap.servers": stack_settings.kafka_bootstrap_servers})
    for key, value in last.items():
        if value is not None:
            producer.produce(compacted, key=key, value=value)
    assert producer.flush(30) == 0
    restarted = SchemaStore(stack_settings.kafka_bootstrap_servers, compacted)
    restarted.load()
    try:
        assert restarted.lookup("kept-value", json.dumps(V1)).schema_id == kept.schema_id
        new = restarted.register("new-value", json.dumps(V2_REQUIRED))
        assert new.schema_id > gone.schema_id > kept.schema_id
    finally:
        restarted.close()
