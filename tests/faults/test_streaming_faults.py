"""Kill -9 a service of the streaming plane while the producer sends: nothing lost or doubled.

Each test sends a fixed-rate, seeded stream into a minute of its own on the stack's topic,
kills one service mid-stream (the supervisor restarts it), waits for ClickHouse to hold every
delivered event, runs the minute (extract → analyze → report) and reconciles.
"""

from __future__ import annotations

import time

import pytest

from etar.config import Settings
from etar.pipeline import run_minute
from etar.report import read_report
from tests.faults.harness import (
    SETTLE_TIMEOUT,
    FaultRow,
    Production,
    assert_reconciled,
    dead_letter_offsets,
    kill,
    own_minute,
    reconcile,
    stored,
    wait_restarted,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _kill_mid_stream(settings: Settings, row: FaultRow, service: str, scale: tuple[int, float],
                     seed: int) -> None:
    count, rate = scale
    minute = own_minute()
    assert stored(settings, minute) == (0, 0), f"minute {minute} is not unused"
    dlq = dead_letter_offsets(settings)
    production = Production(settings, minute, count, rate, seed)
    time.sleep(count / rate / 3)  # a third of the stream is out
    old = kill(settings, service)
    killed = time.monotonic()
    restart_s = wait_restarted(settings, service, old)
    delivered = production.finish()
    report_total = None
    try:
        wait_until(lambda: stored(settings, minute)[0] >= delivered, SETTLE_TIMEOUT,
                   f"{delivered} events of {minute} in ClickHouse")
        row.recover_s = time.monotonic() - killed
        row.note = f"{service} back in {restart_s:.0f}s"
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
