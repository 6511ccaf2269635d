"""Fault injection on the running native stack, and the reconciliation of a minute after it.

A fault test produces events for a minute of its own (hours ago, unused by anything else) on
the stack's own topic, kills one service with SIGKILL (its whole process group, as a crash or
the OOM killer would), lets the supervisor restart it, waits (bounded) until the pipeline
settles and reconciles: delivered = distinct event_id in ClickHouse = rows without FINAL after
``OPTIMIZE … FINAL`` = the minute report's ``total_events``; nothing new in the dead-letter topic.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from confluent_kafka import Consumer

from etar.config import Settings
from etar.minute import Minute
from etar.topics import watermarks
from etar.warehouse import table as warehouse
from etar_stack import stack
from etar_stack.supervisor import Service
from tests.integration.lanes import env_for, produce

RESTART_TIMEOUT = 150.0
"""Bounded wait for the supervisor to bring a killed service back (its back-off + start)."""
SETTLE_TIMEOUT = 120.0
"""Bounded wait for ClickHouse to hold every delivered event of the minute."""


@dataclass
class FaultRow:
    """One line of the reconciliation table printed at the end of the session."""

    fault: str
    produced: int | None = None
    in_clickhouse: int | None = None
    in_report: int | None = None
    lost: int | None = None
    doubled: int | None = None
    replayed_before_merge: int | None = None
    recover_s: float | None = None
    dead_letters: int | None = None
    note: str = ""
    dead_letters_expected: int = 0
    """Poison the fault itself sends (it must reach the dead-letter topic, and nothing else)."""

    @property
    def ok(self) -> bool:
        return (self.produced is not None and self.lost == 0 and self.doubled == 0
                and self.produced == self.in_clickhouse == self.in_report
                and self.dead_letters == self.dead_letters_expected)


def own_minute() -> Minute:
    """A closed minute between 70 minutes and 20 hours ago (inside the table's retention, far
    from the scheduler's own runs), chosen at random. The reconciliation covers it: tests that
    drive it themselves run with the pipeline paused (conftest)."""
    now = Minute.containing(datetime.now(UTC))
    back = random.SystemRandom().randint(70, 20 * 60)
    return Minute.containing(now.start - timedelta(minutes=back))


def service(settings: Settings, name: str) -> Service:
    return next(s for s in stack(settings).services if s.name == name)


def service_pid(settings: Settings, name: str) -> int:
    """The service's pid as the supervisor recorded it in ``<state>/stack.json``."""
    state = stack(settings).read_state()
    assert state is not None, "no supervisor: start the stack with `etar stack up --detach`"
    pid = state["services"].get(name)
    assert pid, f"{name} has no pid in the stack state: {state}"
    return int(pid)


def ready(settings: Settings, name: str) -> bool:
    try:
        return bool(service(settings, name).ready())
    except Exception:
        return False


def kill(settings: Settings, name: str) -> int:
    """SIGKILL the service's process group (the supervisor starts each in a session of its own);
    its former pid."""
    pid = service_pid(settings, name)
    assert os.getpgid(pid) == pid, f"{name} (pid {pid}) does not lead its process group"
    os.killpg(pid, signal.SIGKILL)
    return pid


def wait_restarted(settings: Settings, name: str, old_pid: int,
                   timeout: float = RESTART_TIMEOUT) -> float:
    """Seconds until the supervisor recorded a new pid for the service and it answers again."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        state = stack(settings).read_state() or {}
        pid = state.get("services", {}).get(name)
        if pid and pid != old_pid and ready(settings, name):
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"{name} was not restarted within {timeout:.0f}s; see "
                         f"{settings.state_dir / 'logs' / (name + '.log')}")


@contextlib.contextmanager
def stopped(settings: Settings, name: str) -> Iterator[float]:
    """SIGSTOP the service's process group for the block (a hung service: the supervisor still
    sees it running and restarts nothing), SIGCONT after; yields when it was stopped."""
    pid = service_pid(settings, name)
    assert os.getpgid(pid) == pid, f"{name} (pid {pid}) does not lead its process group"
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        os.killpg(pid, signal.SIGCONT)


@contextlib.contextmanager
def task_settings(settings: Settings, **values: object) -> Iterator[None]:
    """Settings changed for the Airflow tasks started during the block: every task process
    reads the project's ``.env`` afresh; the file is restored after."""
    env = settings.project_dir / ".env"
    before = env.read_text() if env.exists() else None
    lines = "".join(f"ETAR_{name.upper()}={value}\n" for name, value in values.items())
    env.write_text((before or "") + ("" if not before or before.endswith("\n") else "\n")
                   + "# set by tests/faults (removed when the test ends)\n" + lines)
    try:
        yield
    finally:
        if before is None:
            env.unlink(missing_ok=True)
        else:
            env.write_text(before)


def sleep_until_second(second: float, at_least: float = 0.0) -> datetime:
    """Sleep until ``second`` seconds past a minute, at least ``at_least`` seconds from now;
    that instant (UTC)."""
    now = datetime.now(UTC)
    target = now.replace(second=0, microsecond=0) + timedelta(seconds=second)
    while (target - now).total_seconds() < at_least:
        target += timedelta(minutes=1)
    time.sleep((target - now).total_seconds())
    return target


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition()`` holds (exceptions count as "not yet"); bounded."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            if condition():
                return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Production:
    """``etar produce`` at a fixed rate and seed, into one minute, in the background."""

    def __init__(self, settings: Settings, minute: Minute, count: int, rate: float,
                 seed: int, processes: int = 1) -> None:
        self.minute, self.count = minute, count
        if processes > 1:  # several producer processes, each writing every partition
            process: subprocess.Popen[str] | None = subprocess.Popen(
                [sys.executable, "-m", "etar", "produce", "--count", str(count), "--rate",
                 str(rate), "--seed", str(seed), "--minute", str(minute), "--processes",
                 str(processes)], env=env_for(settings), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
        else:
            process = produce(settings, count, minute, seed, rate=rate, background=True)
        assert process is not None
        self.process = process

    def finish(self, timeout: float = 240) -> int:
        """Events the producer's delivery reports confirmed (its summary line)."""
        out, err = self.process.communicate(timeout=timeout)
        found = re.search(r"delivered=(\d+) failed=(\d+)", out)
        assert found, f"no summary from the producer (exit {self.process.returncode}): {err}"
        return int(found.group(1))


def dead_letter_offsets(settings: Settings) -> dict[int, int]:
    """High watermark of each partition of the dead-letter topic."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers,
                         "group.id": "etar-faults-watermarks"})
    try:
        topic = consumer.list_topics(settings.kafka_dlq_topic, timeout=10).topics.get(
            settings.kafka_dlq_topic)
        if topic is None or topic.error is not None:
            return {}
        return {p: watermarks(consumer, settings.kafka_dlq_topic, p)[1]
                for p in topic.partitions}
    finally:
        consumer.close()


def stored(settings: Settings, minute: Minute) -> tuple[int, int]:
    """(distinct event_id, rows without FINAL) of the minute in ClickHouse."""
    row = warehouse.client(settings).query(
        f"SELECT uniqExact(event_id), count() FROM `{settings.clickhouse_table}` "
        "WHERE event_minute = {minute:DateTime('UTC')}",
        parameters={"minute": minute.sql_param}).result_rows[0]
    return int(row[0]), int(row[1])


def merged(settings: Settings, minute: Minute) -> tuple[int, int]:
    """(distinct, rows) after ``OPTIMIZE TABLE … PARTITION … FINAL``: what stays doubled."""
    partition = minute.start.strftime("%Y-%m-%d %H:%M:%S")
    warehouse.client(settings).command(
        f"OPTIMIZE TABLE `{settings.clickhouse_table}` PARTITION '{partition}' FINAL")
    return stored(settings, minute)


def reconcile(row: FaultRow, settings: Settings, minute: Minute, delivered: int,
              report_total: int | None, dlq_before: dict[int, int]) -> FaultRow:
    """Fill ``row`` from ClickHouse, the report and the dead-letter topic."""
    distinct, raw = stored(settings, minute)
    after_distinct, after_rows = merged(settings, minute)
    after = dead_letter_offsets(settings)
    row.produced = delivered
    row.in_clickhouse = after_distinct
    row.in_report = report_total
    row.lost = delivered - after_distinct
    row.doubled = after_rows - after_distinct
    row.replayed_before_merge = raw - distinct
    row.dead_letters = sum(after.get(p, 0) - dlq_before.get(p, 0) for p in after)
    return row


def assert_reconciled(row: FaultRow) -> None:
    assert row.ok, (f"{row.fault}: produced {row.produced}, ClickHouse {row.in_clickhouse}, "
                    f"report {row.in_report}, lost {row.lost}, doubled {row.doubled}, "
                    f"dead letters {row.dead_letters}; {row.note}")


def ingested_minute(settings: Settings, count: int, seed: int) -> Minute:
    """A minute of the test's own holding ``count`` produced (seeded) events in ClickHouse."""
    minute = own_minute()
    assert stored(settings, minute) == (0, 0), f"minute {minute} is not unused"
    produce(settings, count, minute, seed)
    wait_until(lambda: stored(settings, minute)[0] == count, 90, f"{count} events of {minute}")
    return minute


def reconcile_minutes(row: FaultRow, settings: Settings, delivered: Mapping[Minute, int],
                      reports: Mapping[Minute, int | None], dlq_before: dict[int, int]) -> FaultRow:
    """:func:`reconcile` over several minutes, summed; a minute without a report fails the row."""
    sums = FaultRow(row.fault, produced=0, in_clickhouse=0, in_report=0, lost=0, doubled=0,
                    replayed_before_merge=0)
    for minute, count in delivered.items():
        one = reconcile(FaultRow(row.fault), settings, minute, count, reports.get(minute),
                        dlq_before)
        for name in ("produced", "in_clickhouse", "lost", "doubled", "replayed_before_merge"):
            setattr(sums, name, getattr(sums, name) + getattr(one, name))
        in_report = reports.get(minute)
        sums.in_report = None if in_report is None or sums.in_report is None else (
            sums.in_report + in_report)
        sums.dead_letters = one.dead_letters
    for name in ("produced", "in_clickhouse", "in_report", "lost", "doubled",
                 "replayed_before_merge", "dead_letters"):
        setattr(row, name, getattr(sums, name))
    return row
