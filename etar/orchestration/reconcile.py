"""Reconciliation: every minute with rows in ClickHouse ends with a report equal to its count.

A minute's scheduled run can leave it without a right report: its sensor timed out (the sink
down longer than ``ETAR_PIPELINE_SINK_TIMEOUT_SECONDS``), a task failed past its retries, the
minute was empty at extract and got rows later, rows arrived after its report, or no run was
created at all (the scheduler down across minute boundaries: ``catchup=False``).

:func:`audit` compares, over the table's retention window, every minute's ``FINAL`` count (one
grouped query) with the reports in the bucket (listed per day prefix; a report is read again
only when its ETag changed) and the pipeline's runs in flight, and classifies each minute
(:func:`classify`). The newest minutes are left to their scheduled run: a minute is audited
once its cut-off is ``ETAR_RECONCILE_GRACE_SECONDS`` past.

:func:`reconcile` (the DAG's ``reconcile`` task, every minute) redoes the gaps oldest first by
triggering a run of ``etar_pipeline`` for each minute's data interval — the same tasks as a
scheduled run — at most ``ETAR_RECONCILE_MAX_REDO`` in flight, a minute whose redo failed only
after ``ETAR_RECONCILE_RETRY_SECONDS``; and it deletes the bucket's objects that outlived the
retention (at most ``ETAR_RECONCILE_EXPIRE_BATCH`` per run); the replay DAG's executed
notebooks of those minutes go with them. ``etar audit`` prints the audit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from etar.config import Settings, get_settings
from etar.errors import ServiceUnavailable
from etar.extract import storage
from etar.minute import Minute
from etar.orchestration.airflow_api import (
    PAGE,
    PIPELINE_DAG,
    AirflowApi,
    AirflowError,
    minute_of_run,
)
from etar.orchestration.replay import expire_runs
from etar.warehouse import table as warehouse

log = logging.getLogger(__name__)

REDO_PREFIX = "reconcile__"
"""Run ids of the runs the reconciliation triggers: ``reconcile__<minute>__<when>``."""


class State(StrEnum):
    """Where a minute with rows stands against its report."""

    REPORTED = "reported"
    """Its report's ``total_events`` equals its ``FINAL`` count."""
    MISSING = "missing"
    """No report."""
    STALE = "stale"
    """A report whose count differs (rows arrived after it, or it was cut short)."""
    RUNNING = "running"
    """Missing or stale, and a run of the pipeline for the minute is queued or running."""


GAPS = (State.MISSING, State.STALE, State.RUNNING)


@dataclass(frozen=True, order=True)
class MinuteAudit:
    """One minute with rows: its ``FINAL`` count, its report's count (None: no report)."""

    minute: Minute
    rows: int
    reported: int | None
    state: State

    def as_dict(self) -> dict[str, Any]:
        return {"minute": str(self.minute), "rows": self.rows, "reported": self.reported,
                "state": self.state.value}


@dataclass(frozen=True)
class Window:
    """The minutes audited, ``first`` to ``last`` inclusive."""

    first: Minute
    last: Minute

    @classmethod
    def at(cls, now: datetime, settings: Settings) -> Window:
        """Inside the table's retention, up to the newest minute whose cut-off is the grace
        past (the minutes after it are their scheduled run's)."""
        newest = now - timedelta(seconds=settings.pipeline_lateness_seconds
                                 + settings.reconcile_grace_seconds)
        oldest = now - timedelta(hours=settings.clickhouse_retention_hours)
        return cls(Minute.containing(oldest).next, Minute.containing(newest).previous)


@dataclass(frozen=True)
class Runs:
    """The pipeline's runs that matter to the reconciliation."""

    active: frozenset[Minute] = frozenset()
    """Minutes with a queued or running run (scheduled, manual or redo)."""
    redoing: int = 0
    """Of those, runs the reconciliation triggered."""
    failed_redo: frozenset[Minute] = frozenset()
    """Minutes whose redo run failed within the retry delay: not redone yet."""
    known: bool = True
    """False when Airflow could not be asked: no minute can be told running."""


@dataclass(frozen=True)
class Audit:
    """Every minute with rows in the window, oldest first."""

    window: Window
    minutes: list[MinuteAudit]
    runs: Runs = field(default_factory=Runs)

    @property
    def gaps(self) -> list[MinuteAudit]:
        """The minutes without a right report (missing, stale, or being redone)."""
        return [m for m in self.minutes if m.state in GAPS]

    def count(self, state: State) -> int:
        return sum(1 for m in self.minutes if m.state is state)

    def summary(self) -> str:
        counts = ", ".join(f"{self.count(s)} {s.value}" for s in State)
        return (f"{len(self.minutes)} minutes with rows from {self.window.first} to "
                f"{self.window.last}: {counts}")


@dataclass(frozen=True)
class Reconciliation:
    """What one reconciliation found and did."""

    audit: Audit
    redone: list[MinuteAudit]
    expired: list[str]
    expired_runs: list[str] = field(default_factory=list)


def classify(stored: Mapping[Minute, int], reported: Mapping[Minute, int],
             running: AbstractSet[Minute] = frozenset()) -> list[MinuteAudit]:
    """Each minute with rows (``stored``: minute → ``FINAL`` count) against its report
    (``reported``: minute → ``total_events``), oldest first; a gap with a run in flight
    (``running``) is running."""
    audits = []
    for minute in sorted(m for m, rows in stored.items() if rows > 0):
        rows, total = stored[minute], reported.get(minute)
        if total == rows:
            state = State.REPORTED
        elif minute in running:
            state = State.RUNNING
        else:
            state = State.MISSING if total is None else State.STALE
        audits.append(MinuteAudit(minute, rows, total, state))
    return audits


def choose_redo(audits: Iterable[MinuteAudit], in_flight: int, limit: int,
                backoff: AbstractSet[Minute] = frozenset()) -> list[MinuteAudit]:
    """The gaps to redo now: missing or stale, not in ``backoff``, oldest first, so that at
    most ``limit`` redo runs are in flight (``in_flight`` already are)."""
    room = max(0, limit - in_flight)
    todo = sorted(a for a in audits
                  if a.state in (State.MISSING, State.STALE) and a.minute not in backoff)
    return todo[:room]


def stored_counts(window: Window, settings: Settings) -> dict[Minute, int]:
    """Minute → ``FINAL`` count of every minute of the window with rows: one grouped query."""
    rows = warehouse.client(settings).query(
        f"SELECT event_minute, count() FROM `{settings.clickhouse_table}` FINAL "
        "WHERE event_minute >= {first:DateTime('UTC')} AND event_minute <= {last:DateTime('UTC')} "
        "GROUP BY event_minute",
        parameters={"first": window.first.sql_param, "last": window.last.sql_param},
        settings={"do_not_merge_across_partitions_select_final": 1}).result_rows
    return {Minute(start if start.tzinfo else start.replace(tzinfo=UTC)): int(count)
            for start, count in rows}


def _cache_path(settings: Settings) -> Path:
    return settings.state_dir / "reconcile" / f"report-totals-{settings.s3_bucket}.json"


def _load_cache(path: Path) -> dict[str, list[Any]]:
    try:
        cache: dict[str, list[Any]] = json.loads(path.read_text())
        return cache
    except (OSError, ValueError):
        return {}


def _save_cache(path: Path, cache: dict[str, list[Any]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(path)
    except OSError as exc:  # a cache only: the next audit reads the reports again
        log.debug("could not keep the report totals in %s: %s", path, exc)


def reported_counts(window: Window, settings: Settings) -> dict[Minute, int]:
    """Minute → ``total_events`` of each report in the window. A report is read only when its
    ETag is not the one seen last time (a local cache), so an audit reads what changed."""
    etags = storage.list_minutes(window.first, window.last, ".json", settings)
    path = _cache_path(settings)
    cache, kept, totals = _load_cache(path), {}, {}
    for minute, etag in etags.items():
        hit = cache.get(minute.stem)
        if etag and hit and hit[0] == etag:
            totals[minute] = int(hit[1])
            kept[minute.stem] = hit
            continue
        try:
            total = storage.read_json(minute.json_name, settings).get("total_events")
        except storage.ObjectMissing:
            continue  # replaced or expired since the listing
        if not isinstance(total, int):
            log.warning("report %s has no total_events: counted as missing", minute.json_name)
            continue
        totals[minute] = total
        kept[minute.stem] = [etag, total]
    if kept != cache:
        _save_cache(path, kept)
    return totals


def pipeline_runs(api: AirflowApi, settings: Settings, now: datetime) -> Runs:
    """The pipeline's runs in flight, and the redo runs that failed within the retry delay."""
    active = api.active_runs(PIPELINE_DAG)
    failed = api.runs(PIPELINE_DAG, limit=PAGE, states=("failed",), run_id_prefix=REDO_PREFIX,
                      ended_since=now - timedelta(seconds=settings.reconcile_retry_seconds))
    return Runs(
        active=frozenset(m for m in map(minute_of_run, active) if m is not None),
        redoing=sum(1 for run in active if str(run.get("dag_run_id", "")).startswith(
            REDO_PREFIX)),
        failed_redo=frozenset(m for m in map(minute_of_run, failed) if m is not None))


def _audit(settings: Settings, now: datetime, runs: Runs) -> Audit:
    # Runs first, then ClickHouse, then the bucket: a run that ends between two reads has
    # written its report before the bucket is listed, so no finished minute looks missing.
    window = Window.at(now, settings)
    stored = stored_counts(window, settings)
    reported = reported_counts(window, settings)
    return Audit(window, classify(stored, reported, runs.active), runs)


def audit(settings: Settings | None = None, now: datetime | None = None,
          with_runs: bool = True) -> Audit:
    """Every minute with rows in the retention window against its report. ``with_runs``:
    ask Airflow which minutes are being redone (when it cannot be reached, none are)."""
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    runs = Runs(known=False)
    if with_runs:
        try:
            with AirflowApi(settings) as api:
                runs = pipeline_runs(api, settings, now)
        except (ServiceUnavailable, AirflowError) as exc:
            log.warning("the pipeline's runs are unknown (%s): no minute shows as running", exc)
    return _audit(settings, now, runs)


def redo_run_id(minute: Minute, now: datetime) -> str:
    return f"{REDO_PREFIX}{minute.stem}__{now:%Y%m%dT%H%M%S}"


def reconcile(settings: Settings | None = None, now: datetime | None = None) -> Reconciliation:
    """Audit, redo the gaps through runs of the pipeline (bounded), expire old objects."""
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    with AirflowApi(settings) as api:
        runs = pipeline_runs(api, settings, now)
        found = _audit(settings, now, runs)
        redone = choose_redo(found.minutes, runs.redoing, settings.reconcile_max_redo,
                             runs.failed_redo)
        for item in redone:
            log.info("minute %s is %s (%d rows, report %s): triggering its run", item.minute,
                     item.state, item.rows, item.reported)
            api.trigger_minute(
                PIPELINE_DAG, item.minute, redo_run_id(item.minute, now),
                conf={"redo": item.state.value, "rows": item.rows, "reported": item.reported},
                note=f"reconcile: {item.state} report ({item.rows} rows in ClickHouse, "
                     f"report {item.reported})")
    expired = storage.expire_minutes(found.window.first, settings.reconcile_expire_batch,
                                     settings)
    if expired:
        log.info("deleted %d objects older than %s", len(expired), found.window.first)
    expired_runs = expire_runs(found.window.first, settings)
    if expired_runs:
        log.info("deleted the executed notebooks of %d minutes older than %s",
                 len(expired_runs), found.window.first)
    return Reconciliation(found, redone, expired, expired_runs)
