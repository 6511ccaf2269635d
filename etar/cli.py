"""The ``etar`` command line: each pipeline stage, and the commands of installed plugins
(entry point group ``etar.cli``; the etar-stack distribution adds ``stack``, ``up``, ``demo``)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from etar.config import get_settings
from etar.errors import ConfigError, EtarError
from etar.events.event import EventType, uniform_error_rates
from etar.minute import Minute

app = typer.Typer(help="etar: Extract → Transform → Analyze → Report for e-commerce events.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(stderr=True)
T = TypeVar("T")


def _setup_logging(quiet: bool = False) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # A client's retries (minio's urllib3) are not news: the final error is printed once.
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def _error(message: str) -> None:
    """``error: …`` on stderr, one line however long (no wrapping, no markup in the text)."""
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)


def _fail(exc: EtarError) -> NoReturn:
    _error(str(exc))
    raise typer.Exit(1)


def run() -> None:
    """The ``etar`` entry point: the CLI, where an unexpected exception is one line on stderr
    and exit code 1, never a traceback (``ETAR_DEBUG=1`` shows it)."""

    try:
        app()
    except Exception as exc:
        if os.environ.get("ETAR_DEBUG"):
            raise
        from etar.orchestration.failures import describe

        _error(describe(exc))
        sys.exit(1)


def _parse_error_rates(base: float, overrides: list[str]) -> dict[EventType, float]:
    rates = uniform_error_rates(base)
    for item in overrides:
        name, _, value = item.partition("=")
        try:
            rates[EventType(name.strip().upper())] = float(value)
        except ValueError:
            raise ConfigError(f"--error-rate-for wants TYPE=RATE with TYPE one of "
                              f"{[t.value for t in EventType]}, got {item!r}") from None
    return rates


def _instant(text: str) -> datetime:
    """An ISO 8601 instant; one without a zone is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--start-at wants an ISO 8601 instant such as "
                          f"2026-01-01T10:30:00, got {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@app.command()
def produce(
    rate: Annotated[float | None, typer.Option(help="events/s over all processes; 0 = max")]
    = None,
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    count: Annotated[int | None, typer.Option(help="send exactly this many events")] = None,
    processes: Annotated[int, typer.Option(help="producer processes")] = 1,
    error_rate: Annotated[float | None, typer.Option(help="P(error) for every event type")]
    = None,
    error_rate_for: Annotated[list[str] | None, typer.Option(
        help="per-type override, e.g. PURCHASE=0.2 (repeatable)")] = None,
    seed: Annotated[int | None, typer.Option(help="make the events reproducible")] = None,
    minute: Annotated[str | None, typer.Option(
        help="stamp events inside this UTC minute, e.g. 2026-01-01T10:30")] = None,
    start_at: Annotated[str | None, typer.Option(
        help="start sending at this UTC instant, e.g. 2026-01-01T10:30:00")] = None,
) -> None:
    """Produce interaction events to Kafka (Avro, Schema Registry) from several processes."""
    from etar.produce.producer import ProduceOptions
    from etar.produce.producer import produce as run

    _setup_logging(quiet=True)
    settings = get_settings()
    try:
        options = ProduceOptions(
            rate=settings.producer_rate if rate is None else rate,
            duration=duration, count=count, processes=processes,
            error_rates=_parse_error_rates(
                settings.producer_error_rate if error_rate is None else error_rate,
                error_rate_for or []),
            seed=seed, minute=Minute.parse(minute, closed=False) if minute else None,
            start_at=_instant(start_at) if start_at else None,
        )
        options.validate()
        columns = [TextColumn("[bold]producing"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("delivered {task.fields[delivered]} failed {task.fields[failed]}"),
                   TimeElapsedColumn()]
        with Progress(*columns, console=console, transient=True,
                      disable=not console.is_terminal) as bar:
            task = bar.add_task("produce", total=count, delivered=0, failed=0)
            last_line = [time.monotonic()]

            def show(sent: int, delivered: int, failed: int) -> None:
                bar.update(task, completed=sent, delivered=delivered, failed=failed)
                if not console.is_terminal and time.monotonic() - last_line[0] >= 10:
                    last_line[0] = time.monotonic()  # logs and CI get a line every 10 s
                    console.print(f"progress sent={sent} delivered={delivered} "
                                  f"failed={failed}")

            summary = run(options, settings, progress=show)
    except EtarError as exc:
        _fail(exc)
    print(summary.line(), flush=True)
    if summary.failed:
        sys.exit(2)


@app.command()
def sink() -> None:
    """Run the Kafka → ClickHouse sink in the foreground (the stack runs one already)."""
    from etar.sink.consumer import main

    main()


@app.command()
def partitions() -> None:
    """Rows and parts per minute partition of the events table."""
    from etar.warehouse import table as warehouse

    try:
        frame = warehouse.partitions()
    except EtarError as exc:
        _fail(exc)
    table = Table("event_minute (UTC)", "rows", "parts")
    for row in frame.itertuples(index=False):
        table.add_row(str(row.event_minute), str(row.rows), str(row.parts))
    Console().print(table)


GAPS_EXIT = 2
"""`etar audit`'s exit code when a minute with rows has no right report (1: an error)."""


@app.command()
def audit(
    as_json: Annotated[bool, typer.Option("--json", help="print the minutes as JSON")] = False,
    every: Annotated[bool, typer.Option("--all", help="list reported minutes too")] = False,
) -> None:
    """Every minute with rows in ClickHouse (the retention window) against its report:
    minute, rows (FINAL), reported (total_events), state (reported / missing / stale /
    running). Exit 0 when every minute is reported, 2 when gaps remain, 1 on an error."""
    from etar.orchestration.reconcile import audit as audit_window

    try:
        found = audit_window()
    except EtarError as exc:
        _fail(exc)
    shown = found.minutes if every else found.gaps
    if as_json:
        print(json.dumps([item.as_dict() for item in shown]))
    else:
        table = Table("minute (UTC)", "rows", "reported", "state")
        for item in shown:
            table.add_row(str(item.minute), str(item.rows),
                          "-" if item.reported is None else str(item.reported), item.state)
        if shown:
            Console().print(table)
        console.print(found.summary() + ("" if found.runs.known else
                                         " (Airflow unreachable: runs in flight unknown)"),
                      soft_wrap=True, highlight=False)
    if found.gaps:
        raise typer.Exit(GAPS_EXIT)


MinuteOption = Annotated[str, typer.Option(help="UTC minute, e.g. 2026-01-01T10:30")]


def _stage(work: Callable[[Minute], T], minute: str) -> T:
    """Run one pipeline stage on a --minute value (parsed once, here); a failure is printed,
    exit code 1."""
    _setup_logging()
    try:
        return work(Minute.parse(minute))
    except EtarError as exc:
        _fail(exc)


@app.command()
def extract(minute: MinuteOption) -> None:
    """Extract one minute from ClickHouse to Parquet in the bucket."""
    from etar.extract.parquet import extract_minute

    print(_stage(extract_minute, minute) or "empty minute: nothing extracted")


@app.command()
def analyze(minute: MinuteOption) -> None:
    """Run the Spark job on one extracted minute (writes its JSON report next to it)."""
    from etar.analysis.mode import analyze_minute

    run = _stage(analyze_minute, minute)
    print(f"report={run.report} wall_s={run.wall_s:.1f} startup_s={run.startup_s:.1f} "
          f"compute_s={run.compute_s:.1f}")


@app.command()
def report(minute: MinuteOption) -> None:
    """Post one minute's JSON report to the dashboard API."""
    from etar.report.minute_report import report_minute

    print(json.dumps(_stage(report_minute, minute)))


@app.command("run-minute")
def run_minute(minute: MinuteOption) -> None:
    """Extract → analyze → report one minute, without Airflow (skips an empty minute)."""
    from etar.orchestration.pipeline import run_minute as run

    result = _stage(run, minute)
    if result.skipped:
        print(f"minute={result.minute} skipped=empty")
    else:
        print(f"minute={result.minute} parquet={result.parquet} "
              f"report={result.report} posted={json.dumps(result.posted)}")


@app.command()
def replay(minute: MinuteOption) -> None:
    """Replay one closed minute through notebooks 03 → 04 → 05 with papermill; the executed
    notebooks are kept under runs/<minute>/."""
    from etar.orchestration.replay import STAGES
    from etar.orchestration.replay import replay as run_replay

    _setup_logging(quiet=True)
    try:
        parsed = Minute.parse(minute)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task(f"replay {parsed}", total=len(STAGES))

            def step(index: int, notebook: str) -> None:
                bar.update(task, completed=index, description=f"{parsed}: {notebook}")

            result = run_replay(parsed, progress=step)
            bar.update(task, completed=len(STAGES), description=f"{parsed}: done")
    except EtarError as exc:
        _fail(exc)
    for path in result.notebooks:
        print(path)
    print(f"minute={result.minute} report={json.dumps(result.report, sort_keys=True)}")


PLUGINS = "etar.cli"
"""The entry point group of CLI plugins: each names a ``register(app)`` function."""

STACK_MISSING = ("`etar {command}` needs the embedded stack, a separate distribution that is not "
                 "installed: in the checkout run `make install` (uv sync installs it), elsewhere "
                 "`pip install etar-stack`")


def _missing(command: str, summary: str) -> None:
    """A stand-in for a command of the stack when etar-stack is not installed."""

    def stand_in(ctx: typer.Context) -> None:
        _fail(ConfigError(STACK_MISSING.format(command=command)))

    app.command(command, help=f"{summary} (needs etar-stack: not installed)",
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                  "help_option_names": []})(stand_in)


def _load_plugins() -> None:
    from importlib.metadata import entry_points

    found = entry_points(group=PLUGINS)
    for plugin in found:
        plugin.load()(app)
    if "stack" not in found.names:
        _missing("stack", "The native stack: every service on this machine, no Docker.")
        _missing("up", "The main job: the native stack with Airflow and a producer.")
        _missing("demo", "See it work: produce, let Airflow run the minutes, check every stage.")


_load_plugins()
