"""Helpers of the notebooks (``notebooks/00_stack … 05_report``): what a cell would otherwise
copy from another notebook.

Parameter checks raise :class:`NotebookParameterError` (an ``etar`` ``ConfigError``) naming the
parameter and what to pass instead; everything else wraps ``etar`` calls into the tables and
values a notebook shows. Charts live in :mod:`etar.report.charts`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from etar import topics
from etar.config import Settings, get_settings
from etar.errors import ConfigError, EtarError
from etar.events.event import EventType, load_schema_str, uniform_error_rates
from etar.extract import storage
from etar.minute import InvalidMinute, Minute
from etar.produce.producer import ProduceOptions, ProduceSummary, produce
from etar.topics import admin
from etar.warehouse import table as warehouse

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEMO_MINUTES_AGO = 3
"""Demo events go into the sandbox's minute that began this many minutes ago (closed)."""


class NotebookParameterError(ConfigError):
    """A notebook parameter is invalid (raised before the notebook does any work)."""


# --- parameters --------------------------------------------------------------------------


def minute_param(value: str) -> Minute | None:
    """The ``minute`` parameter: None when empty, else a closed UTC minute."""
    if not value.strip():
        return None
    try:
        return Minute.parse(value)
    except InvalidMinute as exc:
        raise NotebookParameterError(f"parameter minute={value!r}: {exc}") from None


def positive(name: str, value: float, *, zero: bool = False) -> float:
    """A parameter that must be > 0 (``zero``: >= 0)."""
    if value < 0 or (value == 0 and not zero):
        raise NotebookParameterError(
            f"parameter {name}={value!r} must be {'>=' if zero else '>'} 0")
    return value


def fraction(name: str, value: float) -> float:
    """A parameter that must be a probability in [0, 1]."""
    if not 0 <= value <= 1:
        raise NotebookParameterError(f"parameter {name}={value!r} must be between 0 and 1")
    return value


def produce_options(rate: float, duration: float, processes: int, error_rate: float,
                    minute: Minute | None = None, seed: int | None = None) -> ProduceOptions:
    """01_produce's parameters as producer options, checked before anything is sent."""
    positive("rate", rate)
    positive("duration", duration)
    if processes < 1:
        raise NotebookParameterError(f"parameter processes={processes!r} must be >= 1")
    fraction("error_rate", error_rate)
    options = ProduceOptions(rate=rate, duration=duration, processes=processes,
                             error_rates=uniform_error_rates(error_rate), minute=minute,
                             seed=seed)
    options.validate()
    return options


# --- 00: the stack -----------------------------------------------------------------------


SERVICE_COLUMNS = ["service", "address", "state", "up", "managed", "pid", "detail"]


def services(settings: Settings | None = None) -> pd.DataFrame:
    """One row per native-stack service: service, address, state, pid, detail, and whether
    the running stack started it (``managed``; a stack started by older code lacks newer
    services). No rows where the stack is not installed (etar-stack: e.g. the compose
    jupyter, which reaches the compose services instead)."""
    try:  # the stack is its own distribution, imported only here
        from etar_stack import stack
    except ImportError:
        return pd.DataFrame({column: pd.Series(dtype=bool if column in ("up", "managed")
                                               else object) for column in SERVICE_COLUMNS})

    native = stack(settings or get_settings())
    started = (native.read_state() or {}).get("services", {})
    rows = [{"service": row["service"], "address": row["url"],
             "state": "up" if row["up"] else "down", "up": bool(row["up"]),
             "managed": row["service"] in started, "pid": row["pid"], "detail": row["detail"]}
            for row in native.status()]
    return pd.DataFrame(rows, columns=SERVICE_COLUMNS)


def topic_partitions(settings: Settings | None = None) -> pd.DataFrame:
    """Partitions of the event topic with their leader and low/high watermarks."""
    settings = settings or get_settings()
    topic = admin(settings).list_topics(settings.kafka_topic, timeout=10).topics[
        settings.kafka_topic]
    consumer = topics.consumer(settings)
    try:
        rows = []
        for pid, partition in sorted(topic.partitions.items()):
            low, high = topics.watermarks(consumer, settings.kafka_topic, pid)
            rows.append({"partition": pid, "leader": partition.leader, "low": low,
                         "high": high, "messages": high - low})
    finally:
        consumer.close()
    return pd.DataFrame(rows)


def schema_versions(settings: Settings | None = None) -> pd.DataFrame:
    """Every subject of the registry with its versions and schema ids."""
    from etar.events.serde import registry_client

    registry = registry_client(settings)
    rows = []
    for subject in sorted(registry.get_subjects()):
        for version in registry.get_versions(subject):
            registered = registry.get_version(subject, version)
            rows.append({"subject": subject, "version": version,
                         "schema_id": registered.schema_id})
    return pd.DataFrame(rows, columns=["subject", "version", "schema_id"])


def bucket(settings: Settings | None = None) -> dict[str, Any]:
    """The bucket: its name, whether it exists, and how many objects it holds."""
    settings = settings or get_settings()
    s3 = storage.client(settings)
    exists = s3.bucket_exists(settings.s3_bucket)
    objects = sum(1 for _ in s3.list_objects(settings.s3_bucket)) if exists else 0
    return {"bucket": settings.s3_bucket, "endpoint": settings.s3_endpoint,
            "exists": exists, "objects": objects}


# --- 01: produce, decode, evolve ------------------------------------------------------------


def produce_measured(options: ProduceOptions, settings: Settings | None = None
                     ) -> tuple[ProduceSummary, pd.DataFrame]:
    """Produce and sample the delivery counters: the summary and a throughput time series."""
    samples: list[dict[str, float]] = []
    started = time.monotonic()

    def progress(sent: int, delivered: int, failed: int) -> None:
        samples.append({"t": time.monotonic() - started, "sent": sent,
                        "delivered": delivered, "failed": failed})

    summary = produce(options, settings, progress)
    series = pd.DataFrame(samples)
    if not series.empty:
        series = series.groupby(series["t"].round(1)).last().reset_index(drop=True)
        dt = series["t"].diff().where(lambda s: s > 0)
        series["events_per_s"] = (series["delivered"].diff() / dt).fillna(0.0)
    return summary, series


def decode_latest(count: int = 5, settings: Settings | None = None) -> pd.DataFrame:
    """The last ``count`` messages of partition 0 of the topic, decoded through the registry."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.serialization import MessageField, SerializationContext

    from etar.events.serde import UUIDKeyDeserializer, event_deserializer, registry_client

    settings = settings or get_settings()
    values = event_deserializer(registry_client(settings))
    keys = UUIDKeyDeserializer()
    consumer = topics.consumer(settings)
    rows: list[dict[str, Any]] = []
    try:
        low, high = topics.watermarks(consumer, settings.kafka_topic, 0)
        consumer.assign([TopicPartition(settings.kafka_topic, 0, max(low, high - count))])
        deadline = time.monotonic() + 30
        while len(rows) < min(count, high - low) and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            ctx = SerializationContext(settings.kafka_topic, MessageField.VALUE)
            schema_id = int.from_bytes((message.value() or b"\0\0\0\0\0")[1:5], "big")
            record = dict(values(message.value(), ctx) or {})  # type: ignore[call-overload]
            rows.append({"offset": message.offset(), "key": keys(message.key()),
                         "schema_id": schema_id, **record})
    finally:
        consumer.close()
    return pd.DataFrame(rows)


@dataclass
class Evolution:
    """What the registry said to a compatible and an incompatible change of the event."""

    subject: str
    v1_id: int
    v2_id: int
    versions: list[int]
    rejected_status: int | None
    rejected_message: str


def schema_evolution(settings: Settings | None = None) -> Evolution:
    """On a scratch subject: the event schema as v1, a compatible v2 (a new optional field
    with a default), then an incompatible v3 (a new field without a default: old
    data cannot be read with it) → 409.
    The scratch subject is deleted afterwards."""
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from etar.events.serde import registry_client

    registry = registry_client(settings)
    subject = f"workbook-scratch-{uuid.uuid4().hex[:8]}-value"
    v1 = json.loads(load_schema_str())
    v2 = {**v1, "fields": [*v1["fields"], {"name": "campaign", "type": ["null", "string"],
                                           "default": None}]}
    v3 = {**v2, "fields": [*v2["fields"], {"name": "loyalty_tier", "type": "string"}]}
    try:
        v1_id = registry.register_schema(subject, Schema(json.dumps(v1), "AVRO"))
        v2_id = registry.register_schema(subject, Schema(json.dumps(v2), "AVRO"))
        status, message = None, "accepted"
        try:
            registry.register_schema(subject, Schema(json.dumps(v3), "AVRO"))
        except SchemaRegistryError as exc:
            status, message = exc.http_status_code, exc.error_message
        versions = list(registry.get_versions(subject))
    finally:
        registry.delete_subject(subject)
        registry.delete_subject(subject, permanent=True)
    return Evolution(subject, v1_id, v2_id, versions, status, message)


# --- 02: partitions ----------------------------------------------------------------------


def latest_closed_partition(frame: pd.DataFrame) -> Minute | None:
    """The most recent closed minute among ``warehouse.partitions`` rows (None if none)."""
    closed = frame[pd.to_datetime(frame["event_minute"], utc=True)
                   <= pd.Timestamp(Minute.last_closed().start)]
    if closed.empty:
        return None
    return Minute(pd.Timestamp(closed["event_minute"].iloc[-1], tz="UTC").to_pydatetime())


def table_ttl(settings: Settings | None = None) -> str:
    """The table's TTL clause as ClickHouse reports it."""
    settings = settings or get_settings()
    engine = str(warehouse.client(settings).command(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() "
        "AND name = {table:String}", parameters={"table": settings.clickhouse_table}))
    match = re.search(r"\bTTL\s+(.+?)(?:\s+SETTINGS\b|$)", engine)
    return match.group(1) if match else ""


# --- 01 to 05: the minute a notebook works on, and where it writes ----------------------------

SANDBOX_SUFFIX = "workbook"
"""The workbook's sandbox: topic, table, consumer group and bucket named after the stack's own
with this suffix. Nothing of the stack reads them: no schedule, reconciliation or dashboard."""
DEMO_EVENTS = 300
"""Events produced into the sandbox when a notebook finds nothing to read (an empty stack)."""
WRITES = ("auto", "sandbox", "live")


def sandbox_settings(settings: Settings | None = None) -> Settings:
    """The stack's settings pointed at the workbook's sandbox (topic, table, group, bucket)."""
    settings = settings or get_settings()
    return settings.model_copy(update={
        "kafka_topic": f"{settings.kafka_topic}_{SANDBOX_SUFFIX}",
        "kafka_dlq_topic": f"{settings.kafka_topic}_{SANDBOX_SUFFIX}_dlq",
        "clickhouse_table": f"{settings.clickhouse_table}_{SANDBOX_SUFFIX}",
        "sink_group_id": f"{settings.sink_group_id}-{SANDBOX_SUFFIX}",
        "s3_bucket": f"{settings.s3_bucket}-{SANDBOX_SUFFIX}",
        "sink_batch_seconds": min(settings.sink_batch_seconds, 0.5)})


def is_sandbox(settings: Settings) -> bool:
    """Whether ``settings`` writes to the workbook's sandbox bucket."""
    return settings.s3_bucket.endswith(f"-{SANDBOX_SUFFIX}")


def ensure_sandbox(settings: Settings | None = None) -> Settings:
    """Create the sandbox's topics, table and bucket if missing; its settings."""
    from etar.topics import ensure_topic

    sandbox = sandbox_settings(settings)
    ensure_topic(sandbox, sandbox.kafka_topic, 1)
    ensure_topic(sandbox, sandbox.kafka_dlq_topic, 1)
    warehouse.apply_schema(settings=sandbox)
    storage.ensure_bucket(sandbox)
    return sandbox


def drop_sandbox(settings: Settings | None = None) -> None:
    """Remove the sandbox: its table, bucket, topics, consumer group, sink progress and
    registry subject."""
    from etar.events.serde import registry_client
    from etar.sink.consumer import progress_path
    from etar.topics import delete_topics

    sandbox = sandbox_settings(settings)
    client = admin(sandbox)  # kept alive until its futures are done
    for future in client.delete_consumer_groups([sandbox.sink_group_id]).values():
        with contextlib.suppress(Exception):  # a group that never consumed does not exist
            future.result(timeout=30)
    progress_path(sandbox).unlink(missing_ok=True)
    warehouse.client(sandbox).command(f"DROP TABLE IF EXISTS `{sandbox.clickhouse_table}`")
    storage.drop_bucket(sandbox)
    delete_topics(sandbox, [sandbox.kafka_topic, sandbox.kafka_dlq_topic])
    registry = registry_client(sandbox)
    subject = f"{sandbox.kafka_topic}-value"
    if subject in registry.get_subjects():
        registry.delete_subject(subject)
        registry.delete_subject(subject, permanent=True)


def recent_minute() -> Minute:
    """The closed minute that began :data:`DEMO_MINUTES_AGO` minutes ago."""
    minute = Minute.last_closed()
    for _ in range(DEMO_MINUTES_AGO - 1):
        minute = minute.previous
    return minute


def latest_reported_minute(settings: Settings | None = None) -> Minute | None:
    """The newest closed minute the dashboard API has a report of and the table has events
    of (None if none, or the API does not answer)."""
    from etar.report.minute_report import fetch

    settings = settings or get_settings()
    try:
        _, history = fetch(settings)
    except Exception:  # no API: no reported minute to default to
        return None
    last = Minute.last_closed()
    reported = sorted({minute for report in history
                       if (minute := Minute.parse(report["minute"], closed=False)) <= last},
                      reverse=True)
    counts = warehouse.count_minutes(reported, settings=settings) if reported else {}
    return next((minute for minute in reported if counts.get(minute, 0) > 0), None)


def latest_minute_with_events(settings: Settings | None = None) -> Minute | None:
    """The newest closed minute with events in the table (None if none)."""
    frame = warehouse.partitions(settings=settings)
    return None if frame.empty else latest_closed_partition(frame)


def store(minute: Minute, rows: int, settings: Settings, timeout: float = 120.0) -> int:
    """Wait until the minute holds at least ``rows`` events; how many it holds. In the
    sandbox, whose topic the stack's sink does not consume, a sink runs here meanwhile."""
    if not is_sandbox(settings):
        return wait_for_rows(minute, rows, settings, timeout)
    from etar.sink.consumer import Sink

    deadline = time.monotonic() + timeout
    stored, checked = [0], [0.0]

    def done() -> bool:
        now = time.monotonic()
        if now - checked[0] >= 0.5:
            checked[0], stored[0] = now, warehouse.count_minute(minute, settings=settings)
        return stored[0] >= rows or now > deadline

    Sink(settings).run(until=done)
    if stored[0] < rows:
        raise EtarError(f"sandbox minute {minute} holds {stored[0]} events after "
                        f"{timeout:.0f} s, expected {rows}: is Kafka up (`etar stack status`)?")
    return stored[0]


def produce_target(minute: str, settings: Settings | None = None) -> tuple[Minute, Settings]:
    """01_produce's minute and lane: a given minute is produced into the stack's topic (as
    asked); without one, events go into the sandbox at :func:`recent_minute`."""
    settings = settings or get_settings()
    given = minute_param(minute)
    if given is not None:
        return given, settings
    return recent_minute(), ensure_sandbox(settings)


def demo_minute(count: int = DEMO_EVENTS, seed: int | None = None, error_rate: float = 0.1,
                settings: Settings | None = None, timeout: float = 120.0,
                minute: Minute | None = None) -> tuple[Minute, Settings]:
    """Produce ``count`` events into a closed minute of the sandbox (:func:`recent_minute`
    unless given) and store them; that minute and the sandbox's settings. Without a ``seed``
    the events are new each call (a repeated seed repeats event ids, which the table
    collapses)."""
    sandbox = ensure_sandbox(settings)
    minute = minute or recent_minute()
    before = warehouse.count_minute(minute, settings=sandbox)
    produce(ProduceOptions(count=count, seed=seed, minute=minute,
                           error_rates=uniform_error_rates(error_rate)), sandbox)
    store(minute, before + count, sandbox, timeout)
    return minute, sandbox


@dataclass(frozen=True)
class Workbench:
    """The minute a notebook works on, where its events are read and where its Parquet and
    JSON go (``settings``), and whether that is where production writes (``live``)."""

    minute: Minute
    settings: Settings
    live: bool
    why: str

    @property
    def sandbox(self) -> bool:
        """Writes go to the workbook's sandbox bucket."""
        return not self.live

    @property
    def demo(self) -> bool:
        """The events are the sandbox's own (demo events), not the stack's."""
        return self.settings.clickhouse_table.endswith(f"_{SANDBOX_SUFFIX}")

    def __str__(self) -> str:
        where = (f"LIVE: writes s3://{self.settings.s3_bucket} and the dashboard "
                 "(this minute's report is redone)" if self.live else
                 f"SANDBOX: writes only s3://{self.settings.s3_bucket}, never a live "
                 "minute's objects or report")
        return (f"minute {self.minute} ({self.why}); reads table "
                f"{self.settings.clickhouse_table}; {where}")

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        return f"**{'⚠ LIVE' if self.live else 'sandbox'}** · {self}"


def workbench(minute: str = "", write: str = "auto", demo: int = 0,
              settings: Settings | None = None) -> Workbench:
    """Resolve the parameters of 02 to 05 (read-only on a live stack unless asked).

    ``minute`` empty: the latest reported minute, else the latest closed minute with events;
    with neither (an empty stack), the sandbox's latest minute with events, else
    :data:`DEMO_EVENTS` events produced into the sandbox first.
    ``write``: ``"sandbox"`` (the workbook's own bucket), ``"live"`` (the stack's bucket and
    dashboard: the minute is replayed), ``"auto"`` (live for a given minute, as ``etar
    replay`` passes one, else sandbox). ``demo`` > 0: that many events produced into the
    sandbox first, which the notebook then works on (refused with ``write="live"``).
    """
    settings = settings or get_settings()
    given = minute_param(minute)
    if write not in WRITES:
        raise NotebookParameterError(
            f"parameter write={write!r} must be one of {', '.join(map(repr, WRITES))}")
    if demo < 0:
        raise NotebookParameterError(f"parameter demo={demo!r} must be >= 0")
    live = write == "live" or (write == "auto" and given is not None)
    if demo:
        if write == "live":
            raise NotebookParameterError(
                "parameter demo: demo events go to the sandbox only; to add events to a live "
                "minute run 01_produce with that minute")
        made, sandbox = demo_minute(demo, settings=settings, minute=given)
        return Workbench(made, sandbox, False, f"{demo} demo events produced into the sandbox")
    if given is not None:
        chosen, why = given, "given"
    elif (reported := latest_reported_minute(settings)) is not None:
        chosen, why = reported, "the latest reported minute"
    elif (newest := latest_minute_with_events(settings)) is not None:
        chosen, why = newest, "the latest closed minute with events"
    elif write == "live":
        raise NotebookParameterError("parameter write='live' without a minute: this stack "
                                     "has no minute with events to replay")
    elif (kept := latest_minute_with_events(sandbox := ensure_sandbox(settings))) is not None:
        return Workbench(kept, sandbox, False, "nothing to read on this stack: the demo "
                         "events already in the sandbox")
    else:
        made, sandbox = demo_minute(DEMO_EVENTS, settings=settings)
        return Workbench(made, sandbox, False, f"nothing to read on this stack: {DEMO_EVENTS} "
                         "demo events produced into the sandbox")
    if live:
        return Workbench(chosen, settings, True, why)
    scratch = settings.model_copy(update={"s3_bucket": sandbox_settings(settings).s3_bucket})
    storage.ensure_bucket(scratch)
    return Workbench(chosen, scratch, False, why)


def wait_for_rows(minute: Minute, rows: int, settings: Settings | None = None,
                  timeout: float = 120.0) -> int:
    """Wait until the minute holds at least ``rows`` distinct events; how many it holds."""
    deadline = time.monotonic() + timeout
    while (stored := warehouse.count_minute(minute, settings=settings)) < rows:
        if time.monotonic() > deadline:
            raise EtarError(f"minute {minute} holds {stored} events after {timeout:.0f} s, "
                            f"expected {rows}: is the sink running (`etar stack status`)?")
        time.sleep(0.5)
    return stored


def require_rows(frame: pd.DataFrame, minute: Minute) -> pd.DataFrame:
    """The minute's rows; a clear error when it has none."""
    if frame.empty:
        raise EtarError(f"minute {minute} has no events: pick a minute that has some "
                        "(`etar partitions`) or leave minute empty")
    return frame


def extracted(minute: Minute, settings: Settings | None = None, fresh: bool = False) -> str:
    """The minute's Parquet object name, extracting the minute first if it is missing
    (``fresh``: always, e.g. right after producing into the minute)."""
    from etar.extract.parquet import extract_minute

    if not fresh and storage.exists(minute.parquet_name, settings):
        return minute.parquet_name
    name = extract_minute(minute, settings)
    if name is None:
        raise EtarError(f"minute {minute} has no events: nothing to extract or analyze")
    return name


def parquet_object(minute: Minute, settings: Settings | None = None
                   ) -> tuple[dict[str, Any], pa.Table]:
    """The minute's Parquet object: its size, rows and row groups, and its content."""
    settings = settings or get_settings()
    stat = storage.stat(minute.parquet_name, settings)
    parquet = pq.ParquetFile(io.BytesIO(storage.read_bytes(minute.parquet_name, settings)))
    info = {"object": storage.s3a_url(minute.parquet_name, settings), "bytes": stat.size,
            "rows": parquet.metadata.num_rows, "row_groups": parquet.metadata.num_row_groups,
            "compression": parquet.metadata.row_group(0).column(0).compression,
            "schema": parquet.schema_arrow}
    return info, parquet.read()


def same_events(frame: pd.DataFrame, table: pa.Table) -> bool:
    """The DataFrame's events, typed as extract types them, equal the Arrow table's
    (both ordered by event_id)."""
    from etar.extract.parquet import to_arrow

    mine = to_arrow(frame).sort_by("event_id")
    return mine.equals(table.select(mine.column_names).sort_by("event_id"))


# --- 04: Spark, interactively ----------------------------------------------------------------


def spark_session(minute: Minute, settings: Settings | None = None) -> SparkSession:
    """An interactive SparkSession where production analyses ``minute``: a session on the
    stack's warm Spark Connect server (``ETAR_SPARK_MODE=connect``), else a local one
    configured like the job (the S3A conf of ``submit_spec``; credentials through the
    environment, as the job gets them)."""
    from pyspark.sql import SparkSession

    from etar.analysis.mode import on_connect
    from etar.analysis.submit import REMOTE_MARKERS, minute_source, require_s3a_jars, submit_spec

    settings = settings or get_settings()
    if on_connect(settings):
        return SparkSession.builder.remote(settings.spark_connect_url).getOrCreate()
    require_s3a_jars(settings)
    spec = submit_spec(minute_source(minute, settings), settings)
    for marker in REMOTE_MARKERS:  # a Connect client earlier in this kernel (or its parent)
        os.environ.pop(marker, None)
    os.environ.update(spec.env)  # the driver JVM inherits the S3 credentials from here
    builder = (SparkSession.builder.master(spec.master).appName(f"{spec.name}-notebook")
               .config("spark.driver.memory", spec.driver_memory))
    for key, value in spec.conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def job_report(minute: Minute, settings: Settings | None = None) -> dict[str, Any]:
    """The production job's JSON for the minute; the job is run first when the JSON is
    missing or older than the minute's Parquet object."""
    from etar.analysis.mode import analyze_minute
    from etar.report.minute_report import read_report

    settings = settings or get_settings()
    parquet = storage.stat(minute.parquet_name, settings)
    try:
        report = storage.stat(minute.json_name, settings)
        stale = report.last_modified is None or parquet.last_modified is None or (
            report.last_modified < parquet.last_modified)
    except storage.ObjectMissing:
        stale = True
    if stale:
        analyze_minute(minute, settings)
    return read_report(minute, settings)


COMPARED = ("minute", "total_events", "total_errors", "error_rate", "unique_users", "revenue",
            *(f"{t.value}.{k}" for t in EventType for k in ("success", "error")))
"""The report fields compared between the notebook and the job (not source/generated_at)."""


def _flat(report: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in report.items() if k != "by_event_type"}
    for kind, counts in report.get("by_event_type", {}).items():
        for key, value in counts.items():
            flat[f"{kind}.{key}"] = value
    return flat


def compare_reports(notebook: dict[str, Any], job: dict[str, Any]) -> pd.DataFrame:
    """Field by field: the notebook's value, the job's, and whether they are equal."""
    left, right = _flat(notebook), _flat(job)
    return pd.DataFrame([{"field": f, "notebook": left.get(f), "job": right.get(f),
                          "equal": left.get(f) == right.get(f)} for f in COMPARED])


def dashboard_report(minute: Minute, settings: Settings | None = None) -> dict[str, Any] | None:
    """The report of ``minute`` as the dashboard API serves it (None if it has none)."""
    from etar.report.minute_report import fetch

    _, history = fetch(settings or get_settings())
    for report in history:
        if Minute.parse(report["minute"], closed=False) == minute:
            return report
    return None


# --- values a run leaves behind ----------------------------------------------------------------

RECORD_PREFIX = "etar-record: "


def record(**values: Any) -> None:
    """Print values as one tagged JSON line, so a papermill run's output notebook carries
    them for tests and ``etar replay`` (:func:`records`)."""
    print(RECORD_PREFIX + json.dumps(values, default=str, sort_keys=True))


def records(notebook: Any) -> dict[str, Any]:
    """Every value :func:`record` printed in an executed notebook (a path or nbformat node)."""
    import nbformat

    if not hasattr(notebook, "cells"):
        notebook = nbformat.read(str(notebook), as_version=4)
    values: dict[str, Any] = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") != "stream":
                continue
            for line in str(output.get("text", "")).splitlines():
                if line.startswith(RECORD_PREFIX):
                    values.update(json.loads(line[len(RECORD_PREFIX):]))
    return values
