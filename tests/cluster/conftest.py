"""The cluster suite: faults that only a cluster topology can survive (a broker leading
partitions kept down a minute, one of two sinks, a rolling restart of the brokers, a Spark
worker; with ``make cluster-airflow``, one of two Celery workers, and ``etar demo``).

It runs only when ``ETAR_TOPOLOGY=cluster`` (``make cluster`` starts that topology on its own
state folder); elsewhere its tests are not even collected, so ``make test`` never runs them.
Its table: ``test-artifacts/faults-cluster.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from etar.config import Settings, get_settings
from etar_stack import running
from tests.faults.harness import FaultRow

CLUSTER = get_settings().topology == "cluster"
collect_ignore_glob = [] if CLUSTER else ["test_*.py"]
ROWS: list[FaultRow] = []
COLUMNS = ("fault", "produced", "in ClickHouse", "in report", "lost", "doubled",
           "replayed before merge", "dead letters", "recover s", "ok", "note")


def _cell(value: object) -> str:
    return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: needs the cluster topology (make cluster)")
    config.addinivalue_line("markers", "cluster_airflow: needs the cluster topology with "
                            "Airflow and the dashboard API (make cluster-airflow)")


@pytest.fixture(scope="session")
def cluster_settings() -> Iterator[Settings]:
    """The running cluster topology (started here, and stopped after, if it is not up)."""
    settings = get_settings()
    assert settings.topology == "cluster", "the cluster suite needs ETAR_TOPOLOGY=cluster"
    with running(settings):
        yield settings


@pytest.fixture
def cluster_row(request: pytest.FixtureRequest) -> Iterator[FaultRow]:
    """This fault's row, kept whether the test passes or fails."""
    row = FaultRow(fault=request.node.name.removeprefix("test_"))
    yield row
    ROWS.append(row)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in ROWS:
        ok = (row.produced is not None and row.lost == 0 and row.doubled == 0
              and row.produced == row.in_clickhouse and row.dead_letters == 0
              and row.in_report in (None, row.produced))
        lines.append("| " + " | ".join(_cell(v) for v in (
            row.fault, row.produced, row.in_clickhouse, row.in_report, row.lost, row.doubled,
            row.replayed_before_merge, row.dead_letters, row.recover_s,
            "yes" if ok else "NO", row.note)) + " |")
    text = "\n".join(lines)
    target = Path(__file__).resolve().parents[2] / "test-artifacts" / "faults-cluster.md"
    target.parent.mkdir(exist_ok=True)
    target.write_text("# Cluster topology: reconciliation per fault\n\n" + text + "\n")
    terminalreporter.section("cluster faults: reconciliation")
    terminalreporter.write_line(text)
    terminalreporter.write_line(f"(written to {target})")
