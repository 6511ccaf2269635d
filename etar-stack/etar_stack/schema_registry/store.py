"""The registry's state: subjects, versions, ids and configs, kept in a compacted topic.

As in Confluent Schema Registry, every change is a record in the ``_schemas`` topic (JSON
key and value, compaction keeps the last per key), and the state is rebuilt by reading the
topic from the start, so schema ids are stable across restarts. Record shapes:

- ``{"keytype": "SCHEMA", "subject", "version", "magic": 1}`` →
  ``{"subject", "version", "id", "schema", "deleted"}`` (null value: version hard-deleted)
- ``{"keytype": "CONFIG", "subject": <name or null>, "magic": 0}`` →
  ``{"compatibilityLevel"}`` (null value: subject config removed)
- ``{"keytype": "NOOP", "magic": 0}``: a marker the registry writes to find the log's end
- ``{"keytype": "MAX_ID", "magic": 0}`` → ``{"max_id"}``: the highest id ever handed out,
  written before a hard delete, so the deleted id stays taken once compaction has removed
  its records

Ids are never reused. A write is applied once it is read back from the log (in order, with
whatever else landed before it). A write whose acknowledgement timed out (50002, as
Confluent's ``kafkastore.timeout.ms``) may still land later: its id stays reserved, and the
next write first appends a NOOP and reads the log up to it (the idempotent producer keeps the
order), so the late record is known before anything is decided.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from etar.topics import watermarks
from etar_stack.schema_registry import compat
from etar_stack.schema_registry.compat import Level

log = logging.getLogger(__name__)

_GUID_NAMESPACE = uuid.UUID("6f1c3c1e-7f6b-4f55-9c43-2bf1b5d7a9e1")
NOOP_KEY = {"keytype": "NOOP", "magic": 0}
MAX_ID_KEY = {"keytype": "MAX_ID", "magic": 0}
STORE_ERROR = 50001
TIMEOUT_ERROR = 50002


class RegistryError(Exception):
    """An API error with Confluent's error code; the HTTP status derives from it."""

    def __init__(self, error_code: int, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message

    @property
    def status(self) -> int:
        return self.error_code if self.error_code < 1000 else self.error_code // 100


def subject_not_found(subject: str) -> RegistryError:
    return RegistryError(40401, f"Subject '{subject}' not found.")


@dataclass
class Version:
    """One version of a subject."""

    subject: str
    version: int
    schema_id: int
    deleted: bool = False


@dataclass
class State:
    """What the ``_schemas`` log adds up to."""

    schemas: dict[int, str] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    subjects: dict[str, dict[int, Version]] = field(default_factory=dict)
    global_level: Level = Level.BACKWARD
    subject_levels: dict[str, Level] = field(default_factory=dict)
    max_id: int = 0
    """The highest schema id the log has seen (deleted ones included)."""

    def apply(self, key: dict[str, Any], value: dict[str, Any] | None) -> None:
        """Fold one log record into the state."""
        keytype, subject = key.get("keytype"), key.get("subject")
        if keytype == "MAX_ID":
            self.max_id = max(self.max_id, int((value or {}).get("max_id", 0)))
        elif keytype == "SCHEMA" and isinstance(subject, str):
            versions = self.subjects.setdefault(subject, {})
            if value is None:
                versions.pop(key["version"], None)
                if not versions:
                    del self.subjects[subject]
                return
            schema_id = value["id"]
            self.max_id = max(self.max_id, schema_id)
            self.schemas.setdefault(schema_id, value["schema"])
            self.ids.setdefault(value["schema"], schema_id)
            versions[value["version"]] = Version(subject, value["version"], schema_id,
                                                 value.get("deleted", False))
        elif keytype == "CONFIG":
            if subject is None:
                self.global_level = Level(value["compatibilityLevel"]) if value else Level.BACKWARD
            elif value is None:
                self.subject_levels.pop(subject, None)
            else:
                self.subject_levels[subject] = Level(value["compatibilityLevel"])


class SchemaStore:
    """Registry operations over :class:`State`, each write appended to the log first."""

    def __init__(self, bootstrap_servers: str, topic: str, timeout: float = 15.0) -> None:
        self.topic = topic
        self.timeout = timeout
        """How long a write waits for its acknowledgement (then 50002)."""
        self.state = State()
        self._lock = threading.RLock()
        self._bootstrap = bootstrap_servers
        self._producer = Producer({"bootstrap.servers": bootstrap_servers, "acks": "all",
                                   "enable.idempotence": True})
        self._reader: Consumer | None = None
        self._position = 0
        """The next offset of the log to read."""
        self._uncertain = False
        """A write's outcome is unknown (it timed out or failed): read the log to its end
        before the next one."""
        self._reserved = 0
        """The highest id handed to a write whose outcome is unknown."""

    # --- log ---------------------------------------------------------------------------
    def load(self) -> None:
        """Read the topic from the beginning to its end and rebuild the state."""
        self._reader = Consumer({"bootstrap.servers": self._bootstrap,
                                 "group.id": "etar-registry", "enable.auto.commit": False,
                                 "auto.offset.reset": "earliest"})
        low, high = watermarks(self._reader, self.topic)
        self._reader.assign([TopicPartition(self.topic, 0, low)])
        self._position = low
        self._read_until(high, timeout=max(self.timeout, 30.0))
        log.info("loaded %d schemas in %d subjects from %s (%d records)",
                 len(self.state.schemas), len(self.state.subjects), self.topic, high - low)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._producer.flush(self.timeout)

    def _read_until(self, end: int, timeout: float) -> None:
        """Apply the log's records up to offset ``end`` (exclusive)."""
        assert self._reader is not None, "load() first"
        deadline = time.monotonic() + timeout
        while self._position < end:
            message = self._reader.poll(max(0.0, min(1.0, deadline - time.monotonic())))
            if message is None:
                if time.monotonic() >= deadline:
                    raise RegistryError(TIMEOUT_ERROR, f"Timed out reading {self.topic} at "
                                        f"offset {self._position} (up to {end})")
                continue
            if message.error():
                raise RegistryError(STORE_ERROR, f"Error reading {self.topic}: "
                                    f"{message.error()}")
            offset = message.offset() or 0
            if offset < self._position:  # our own write, applied when it was acknowledged
                continue
            self._position = offset + 1
            key = json.loads(message.key() or b"{}")
            value = message.value()
            self.state.apply(key, json.loads(value) if value else None)

    def _write(self, key: dict[str, Any], value: dict[str, Any] | None) -> int:
        """Append one record; its offset once acknowledged. A timeout (50002) or a failure
        (50001) leaves its outcome unknown: the record may still land."""
        outcome: list[tuple[Any, int | None]] = []
        self._producer.produce(self.topic, key=json.dumps(key, separators=(",", ":")),
                               value=None if value is None else json.dumps(value),
                               on_delivery=lambda err, msg: outcome.append((err, msg.offset())))
        self._producer.flush(self.timeout)
        if not outcome:
            self._uncertain = True
            raise RegistryError(TIMEOUT_ERROR, f"Write to the schemas log {self.topic} timed "
                                f"out after {self.timeout:.0f}s; it may still complete: retry")
        error, offset = outcome[0]
        if error is not None or offset is None:
            self._uncertain = True
            raise RegistryError(STORE_ERROR, f"Error while writing to the schemas log "
                                f"{self.topic}: {error}")
        return offset

    def _catch_up(self) -> None:
        """After a write of unknown outcome: append a NOOP and read the log up to it, so a
        late record is applied before anything new is decided."""
        if not self._uncertain:
            return
        offset = self._write(NOOP_KEY, None)
        self._read_until(offset + 1, self.timeout)
        self._uncertain = False
        log.info("caught up with %s after a write of unknown outcome (offset %d)", self.topic,
                 offset)

    def _append(self, key: dict[str, Any], value: dict[str, Any] | None) -> None:
        """Write one record and apply it (with whatever landed before it) once in the log."""
        self._catch_up()
        offset = self._write(key, value)
        if offset == self._position:  # nothing else landed meanwhile: no need to read it back
            self.state.apply(key, value)
            self._position = offset + 1
        else:
            self._read_until(offset + 1, self.timeout)

    def next_id(self) -> int:
        """A schema id never handed out: above every id in the log, even deleted ones, and
        above any write whose outcome is unknown."""
        return max(self.state.max_id, max(self.state.schemas, default=0), self._reserved) + 1

    def _write_version(self, version: Version, hard_delete: bool = False,
                       schema: str | None = None) -> None:
        key = {"keytype": "SCHEMA", "subject": version.subject, "version": version.version,
               "magic": 1}
        value = None if hard_delete else {
            "subject": version.subject, "version": version.version, "id": version.schema_id,
            "schema": schema or self.state.schemas[version.schema_id],
            "deleted": version.deleted}
        self._append(key, value)

    # --- reads -------------------------------------------------------------------------
    def versions(self, subject: str, deleted: bool = False) -> list[Version]:
        """A subject's versions, oldest first; 40401 when it has none."""
        found = [v for _, v in sorted(self.state.subjects.get(subject, {}).items())
                 if deleted or not v.deleted]
        if not found:
            raise subject_not_found(subject)
        return found

    def subjects(self, deleted: bool = False, prefix: str = "") -> list[str]:
        return sorted(s for s, versions in self.state.subjects.items()
                      if s.startswith(prefix) and any(deleted or not v.deleted
                                                      for v in versions.values()))

    def version(self, subject: str, version: str | int, deleted: bool = False) -> Version:
        """One version by number, or ``latest`` / ``-1``."""
        existing = self.versions(subject, deleted=True)
        if str(version) in ("latest", "-1"):
            live = [v for v in existing if deleted or not v.deleted]
            if not live:
                raise subject_not_found(subject)
            return live[-1]
        try:
            number = int(version)
        except ValueError:
            raise RegistryError(42202, f"The specified version '{version}' is not a valid "
                                "version id. Allowed values are between [1, 2^31-1] and the "
                                "string \"latest\"") from None
        if number < 1:
            raise RegistryError(42202, f"The specified version '{version}' is not a valid "
                                "version id.")
        for item in existing:
            if item.version == number and (deleted or not item.deleted):
                return item
        raise RegistryError(40402, f"Version {number} not found.")

    def schema(self, schema_id: int) -> str:
        try:
            return self.state.schemas[schema_id]
        except KeyError:
            raise RegistryError(40403, "Schema not found") from None

    def usages(self, schema_id: int) -> list[Version]:
        """Every live subject version that uses ``schema_id``."""
        self.schema(schema_id)
        return [v for versions in self.state.subjects.values() for v in versions.values()
                if v.schema_id == schema_id and not v.deleted]

    def lookup(self, subject: str, schema_str: str, normalize: bool = False,
               deleted: bool = False) -> Version:
        """The version of ``subject`` holding this schema (40401 / 40403 otherwise)."""
        text = self._canonical(schema_str, normalize)
        for item in reversed(self.versions(subject, deleted=deleted)):
            if self._canonical(self.state.schemas[item.schema_id], normalize) == text:
                return item
        raise RegistryError(40403, "Schema not found")

    def level(self, subject: str | None) -> Level:
        if subject is not None and subject in self.state.subject_levels:
            return self.state.subject_levels[subject]
        return self.state.global_level

    def subject_level(self, subject: str, default_to_global: bool) -> Level:
        if subject in self.state.subject_levels:
            return self.state.subject_levels[subject]
        if default_to_global:
            return self.state.global_level
        raise RegistryError(40408, f"Subject '{subject}' does not have subject-level "
                            "compatibility configured")

    def guid(self, schema_id: int) -> str:
        return str(uuid.uuid5(_GUID_NAMESPACE, self.schema(schema_id)))

    @staticmethod
    def _canonical(schema_str: str, normalize: bool) -> str:
        try:
            return compat.canonical(schema_str, normalize)
        except compat.InvalidSchema as exc:
            raise RegistryError(42201, str(exc)) from exc

    # --- compatibility -----------------------------------------------------------------
    def check(self, subject: str, schema_str: str, version: str | int | None = None
              ) -> list[str]:
        """Incompatibilities of ``schema_str`` with the subject under its level.

        With ``version``, against that one version only (what the versioned endpoint does).
        """
        self._canonical(schema_str, False)
        level = self.level(subject)
        if version is not None:
            against = [self.version(subject, version)]
            level = Level(level.value.removesuffix("_TRANSITIVE"))
        else:
            against = [v for v in self.state.subjects.get(subject, {}).values() if not v.deleted]
            against.sort(key=lambda v: v.version)
        return compat.incompatibilities(
            schema_str, [self.state.schemas[v.schema_id] for v in against], level)

    # --- writes ------------------------------------------------------------------------
    def register(self, subject: str, schema_str: str, normalize: bool = False) -> Version:
        """Register (or find) the schema under ``subject``; 409 when incompatible."""
        with self._lock:
            text = self._canonical(schema_str, normalize)
            self._catch_up()  # a registration that timed out may have landed: this very one
            try:
                return self.lookup(subject, schema_str, normalize)
            except RegistryError as exc:
                if exc.error_code not in (40401, 40403):
                    raise
            problems = self.check(subject, schema_str)
            if problems:
                raise RegistryError(409, f"Schema being registered is incompatible with an "
                                    f"earlier schema for subject \"{subject}\", details: "
                                    f"{problems}")
            schema_id = self.state.ids.get(text)
            if schema_id is None:
                schema_id = self.next_id()
            existing = self.state.subjects.get(subject, {})
            version = Version(subject, max(existing, default=0) + 1, schema_id)
            try:
                self._write_version(version, schema=text)
            except RegistryError:
                if self._uncertain:
                    self._reserved = max(self._reserved, schema_id)
                raise
            return version

    def delete_version(self, subject: str, version: str | int, permanent: bool) -> int:
        with self._lock:
            item = self.version(subject, version, deleted=permanent)
            if permanent and not item.deleted:
                raise RegistryError(40407, f"Subject '{subject}' Version {item.version} was not "
                                    "deleted first before being permanently deleted")
            item = Version(item.subject, item.version, item.schema_id, deleted=True)
            if permanent:
                self._keep_ids_taken()
            self._write_version(item, hard_delete=permanent)
            return item.version

    def delete_subject(self, subject: str, permanent: bool) -> list[int]:
        with self._lock:
            items = self.versions(subject, deleted=permanent)
            if permanent and any(not v.deleted for v in items):
                raise RegistryError(40405, f"Subject '{subject}' was not deleted first before "
                                    "being permanently deleted")
            if permanent:
                self._keep_ids_taken()
            for item in items:
                self._write_version(Version(subject, item.version, item.schema_id, True),
                                    hard_delete=permanent)
            if permanent and subject in self.state.subject_levels:
                self._append({"keytype": "CONFIG", "subject": subject, "magic": 0}, None)
            return [v.version for v in items]

    def _keep_ids_taken(self) -> None:
        """Record the highest id handed out, so a hard delete (whose records compaction
        removes) never frees an id for reuse, across restarts too."""
        highest = self.next_id() - 1
        if highest > 0:
            self._append(MAX_ID_KEY, {"max_id": highest})

    def set_level(self, subject: str | None, level: str) -> Level:
        try:
            parsed = Level(str(level).upper())
        except ValueError:
            raise RegistryError(42203, f"Invalid compatibility level: {level}") from None
        with self._lock:
            self._append({"keytype": "CONFIG", "subject": subject, "magic": 0},
                         {"compatibilityLevel": parsed.value})
        return parsed

    def delete_level(self, subject: str | None) -> Level:
        with self._lock:
            previous = self.level(subject)
            self._append({"keytype": "CONFIG", "subject": subject, "magic": 0}, None)
            return previous
