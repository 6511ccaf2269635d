"""Kill -9 a service of the streaming plane while the producer sends: nothing lost or doubled.

Each test sends a fixed-rate, seeded stream into a minute of its own on the stack's topic,
kills one service mid-stream (the supervisor restarts it), waits for ClickHouse to hold every
delivered event, runs the minute (extract → analyze → report) and reconciles.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from etar.config import Settings
from etar.minute import Minute
from etar.orchestration.pipeline import run_minute
from etar.report.minute_report import read_report
from tests.faults.harness import (
    SETTLE_TIMEOUT,
    FaultRow,
    Production,
    assert_reconciled,
    dead_letter_offsets,
    kill,
    own_minute,
    reconcile,
    service_pid,
    stored,
    wait_restarted,
    wait_until,
)
from tests.integration.test_sink import produce_at_limit

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _kill_mid_stream(settings: Settings, row: FaultRow, service: str, scale: tuple[int, float],
                     seed: int, processes: int = 1) -> None:
    count, rate = scale
    minute = own_minute()
    assert stored(settings, minute) == (0, 0), f"minute {minute} is not unused"
    dlq = dead_letter_offsets(settings)
    production = Production(settings, minute, count, rate, seed, processes)
    time.sleep(count / rate / 3)  # a third of the stream is out
    old = kill(settings, service)
    killed = time.monotonic()
    restart_s = wait_restarted(settings, service, old)
    delivered = production.finish()
    note = f"{service} back in {restart_s:.0f}s" + (
        f"; {processes} producer processes" if processes > 1 else "")
    _settle_and_report(settings, row, minute, delivered, dlq, since=killed, note=note)


def _settle_and_report(settings: Settings, row: FaultRow, minute: Minute, delivered: int,
                       dlq: dict[int, int], since: float, note: str,
                       check: Callable[[], None] = lambda: None) -> None:
    """Wait for ClickHouse to hold the ``delivered`` events of ``minute`` (the recovery time
    counts from ``since``), run ``check``, run the minute and reconcile the row."""
    report_total = None
    try:
        wait_until(lambda: stored(settings, minute)[0] >= delivered, SETTLE_TIMEOUT,
                   f"{delivered} events of {minute} in ClickHouse")
        row.recover_s = time.monotonic() - since
        row.note = note
        check()
        assert run_minute(minute, settings).posted is not None
        report_total = int(read_report(minute, settings)["total_events"])
    finally:
        reconcile(row, settings, minute, delivered, report_total, dlq)
    assert_reconciled(row)


def test_sink_killed(stack_settings: Settings, fault_row: FaultRow,
                     scale: tuple[int, float]) -> None:
    _kill_mid_stream(stack_settings, fault_row, "sink", scale, seed=1201)


def test_clickhouse_killed_mid_insert(stack_settings: Settings, fault_row: FaultRow,
                                      scale: tuple[int, float]) -> None:
    _kill_mid_stream(stack_settings, fault_row, "clickhouse", scale, seed=1202)


def test_kafka_broker_killed(stack_settings: Settings, fault_row: FaultRow,
                             scale: tuple[int, float]) -> None:
    _kill_mid_stream(stack_settings, fault_row, "kafka", scale, seed=1203)


def test_schema_registry_killed(stack_settings: Settings, fault_row: FaultRow,
                                scale: tuple[int, float]) -> None:
    """The producer and the sink hold the schema by id; a sink restarted while the registry
    is down must wait for it rather than dead-letter what it cannot decode."""
    _kill_mid_stream(stack_settings, fault_row, "schema-registry", scale, seed=1204)


def test_kafka_broker_restarted_under_two_producers(stack_settings: Settings,
                                                    fault_row: FaultRow,
                                                    scale: tuple[int, float]) -> None:
    """Two producer processes write every partition (their batches interleave, and those
    queued while the broker is down arrive after the ones sent later): each event once in
    ClickHouse and in the report."""
    _kill_mid_stream(stack_settings, fault_row, "kafka", scale, seed=1206, processes=2)


def test_message_at_the_topic_limit(stack_settings: Settings, fault_row: FaultRow,
                                    scale: tuple[int, float]) -> None:
    """A record as large as the event topic takes (about 1 MiB, random bytes) amid the stream:
    it is dead-lettered with the error headers (the stack aligned the dead-letter topic), the
    sink never stops (before: MSG_SIZE_TOO_LARGE at every restart, then down for good), and
    every event after it is ingested and reported."""
    settings, row = stack_settings, fault_row
    count, rate = scale
    minute = own_minute()
    assert stored(settings, minute) == (0, 0), f"minute {minute} is not unused"
    dlq = dead_letter_offsets(settings)
    sink_pid = service_pid(settings, "sink")
    production = Production(settings, minute, count, rate, seed=1205)
    time.sleep(count / rate / 3)
    _, size = produce_at_limit(settings)
    sent = time.monotonic()
    row.dead_letters_expected = 1
    delivered = production.finish()

    def dead_lettered_in_place() -> None:
        wait_until(lambda: sum(dead_letter_offsets(settings).values()) > sum(dlq.values()), 60,
                   "the dead letter")
        assert service_pid(settings, "sink") == sink_pid, "the sink was restarted"

    _settle_and_report(settings, row, minute, delivered, dlq, since=sent,
                       note=f"one {size}-byte record; sink never restarted",
                       check=dead_lettered_in_place)
