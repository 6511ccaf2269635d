"""The fault suite's table: one row per injected fault, printed at the end of the session and
written to ``test-artifacts/faults.md``.

``ETAR_CHAOS=1`` (``make chaos``) runs the longer variants: more events, a later kill.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from etar.config import Settings
from etar.orchestration.airflow_api import AirflowApi
from tests.faults.harness import FaultRow
from tests.pipeline_state import pipeline_paused

ROWS: list[FaultRow] = []
CHAOS = os.environ.get("ETAR_CHAOS", "") not in ("", "0")
COLUMNS = ("fault", "produced", "in ClickHouse", "in report", "lost", "doubled",
           "replayed before merge", "dead letters", "recover s", "ok", "note")


@pytest.fixture
def fault_row(request: pytest.FixtureRequest) -> Iterator[FaultRow]:
    """The row of this test's fault, kept whether the test passes or fails."""
    row = FaultRow(fault=request.node.name.removeprefix("test_"))
    yield row
    ROWS.append(row)


@pytest.fixture
def api(stack_settings: Settings) -> Iterator[AirflowApi]:
    """The API with etar_pipeline unpaused (so its runs are scheduled); state restored."""
    with pipeline_paused(stack_settings, False) as client:
        yield client


@pytest.fixture(autouse=True)
def _pipeline_left_alone(request: pytest.FixtureRequest) -> Iterator[None]:
    """A fault test that drives its minute itself (not through ``api``) runs with etar_pipeline
    paused: the reconciliation would otherwise redo the test's minute while the test runs it
    (both idempotent, but the report the test reads could be the other run's). Restored after."""
    if "api" in request.fixturenames or "stack_settings" not in request.fixturenames:
        yield
        return
    settings: Settings = request.getfixturevalue("stack_settings")
    with pipeline_paused(settings, True):
        yield


@pytest.fixture
def scale() -> tuple[int, float]:
    """(events, events/s) the producer sends during a fault."""
    return (12_000, 200.0) if CHAOS else (3_000, 150.0)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def table() -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in ROWS:
        lines.append("| " + " | ".join(_cell(v) for v in (
            row.fault, row.produced, row.in_clickhouse, row.in_report, row.lost, row.doubled,
            row.replayed_before_merge, row.dead_letters, row.recover_s,
            "yes" if row.ok else "NO", row.note)) + " |")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    text = table()
    root = Path(__file__).resolve().parents[2]
    target = root / "test-artifacts" / "faults.md"
    target.parent.mkdir(exist_ok=True)
    target.write_text("# Fault injection: reconciliation per fault\n\n" + text + "\n")
    terminalreporter.section("faults: reconciliation")
    terminalreporter.write_line(text)
    terminalreporter.write_line(f"(written to {target})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: kills a service of the native stack (SIGKILL)")
