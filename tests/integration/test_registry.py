"""Conformance of etar's schema registry, driven by Confluent's own Python client."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from etar.config import Settings
from etar.events import load_schema_str

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
    process = subprocess.Popen([sys.executable, "-m", "etar.native.registry"], env=env,
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
