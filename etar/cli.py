"""The ``etar`` command line: the native stack and each pipeline stage."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from etar.config import get_settings
from etar.errors import ConfigError, EtarError
from etar.events import EventType, uniform_error_rates
from etar.minute import Minute

if TYPE_CHECKING:
    from etar_stack.supervisor import Stack

app = typer.Typer(help="etar: Extract → Transform → Analyze → Report for e-commerce events.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
stack_app = typer.Typer(help="The native stack: every service on this machine, no Docker.",
                        no_args_is_help=True)
app.add_typer(stack_app, name="stack")
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
    import os

    try:
        app()
    except Exception as exc:
        if os.environ.get("ETAR_DEBUG"):
            raise
        from etar.failures import describe

        _error(describe(exc))
        sys.exit(1)


def _stack() -> Stack:
    from etar_stack import stack

    return stack(get_settings())


@stack_app.command("install")
def stack_install() -> None:
    """Fetch what the services need: Kafka and hadoop-aws jars (Maven), versitygw (Go)."""
    from etar_stack import install

    _setup_logging()
    try:
        install(get_settings())
    except EtarError as exc:
        _fail(exc)


class Topology(StrEnum):
    """What ``etar stack up`` runs (see the README's "Cluster topology")."""

    single = "single"
    cluster = "cluster"


@stack_app.command("up")
def stack_up(
    detach: Annotated[bool, typer.Option("--detach", "-d", help="return once all are ready")]
    = False,
    quiet: Annotated[bool, typer.Option(help="do not echo service logs")] = False,
    topology: Annotated[Topology | None, typer.Option(
        help="single: one process per engine; cluster: 3 Kafka brokers, 2 sinks "
        "(default: ETAR_TOPOLOGY)")] = None,
) -> None:
    """Start every service in dependency order; Ctrl-C stops them all."""
    _use_topology(topology)
    _setup_logging()
    stack = _stack()
    if stack.read_state() is None:  # (a running stack keeps its record; up refuses below)
        _record_topology()
    try:
        if detach:
            with console.status("starting the native stack (first run downloads the jars)…"):
                stack.up_detached()
            _print_status(stack.status())
        else:
            stack.up(echo=not quiet)
    except EtarError as exc:
        _fail(exc)


TOPOLOGY_FILE = "topology"
"""In the state folder: the topology ``etar stack up`` last started."""


def _use_topology(topology: Topology | None, recorded: bool = False) -> None:
    """``--topology``: this process and every one it starts (the detached supervisor, the
    services) read it as ``ETAR_TOPOLOGY``. Without it and without ``ETAR_TOPOLOGY`` in the
    environment, ``recorded`` takes the one the stack was last started with."""
    value = str(topology.value) if topology is not None else None
    if value is None and recorded and "ETAR_TOPOLOGY" not in os.environ:
        with contextlib.suppress(OSError):
            value = (get_settings().state_dir / TOPOLOGY_FILE).read_text().strip() or None
    if value is not None:
        os.environ["ETAR_TOPOLOGY"] = value
        get_settings.cache_clear()


def _record_topology() -> None:
    settings = get_settings()
    with contextlib.suppress(OSError):
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        (settings.state_dir / TOPOLOGY_FILE).write_text(settings.topology)


@stack_app.command("down")
def stack_down(
    volumes: Annotated[bool, typer.Option(help="also delete the services' data")] = False,
) -> None:
    """Stop the stack started by `etar stack up`."""
    import shutil

    stack = _stack()
    stopped = stack.down()
    console.print("stack stopped" if stopped else "the stack was not running")
    if volumes:
        from etar_stack.services import postgres

        # As root, Postgres keeps its cluster outside the private state folder.
        for data in dict.fromkeys([stack.state_dir / "data",
                                   postgres.data_dir(stack.settings).parent]):
            shutil.rmtree(data, ignore_errors=True)
            console.print(f"deleted {data}")


def _print_status(rows: list[dict[str, object]]) -> None:
    if not sys.stdout.isatty():  # a log, a pipe, CI: whole values, one service a line
        width = max((len(str(row["service"])) for row in rows), default=0)
        for row in rows:
            detail = f"  {row['detail']}" if row["detail"] else ""
            print(f"{row['service']!s:<{width}}  {'up' if row['up'] else 'down':<4}  "
                  f"{row['pid'] or '-'!s:<7}  {row['url']}{detail}")
        return
    table = Table("service", "state", "pid", "address", "detail")
    for row in rows:
        state = "[green]up[/]" if row["up"] else "[red]down[/]"
        table.add_row(str(row["service"]), state, str(row["pid"] or "-"), str(row["url"]),
                      str(row["detail"]))
    Console().print(table)


@stack_app.command("status")
def stack_status(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    topology: Annotated[Topology | None, typer.Option(
        help="the topology to show (default: ETAR_TOPOLOGY, else the one the stack was "
        "last started with)")] = None,
) -> None:
    """Which services answer (each member of a cluster); exit code 0 only when all do. A table
    on a terminal, else one plain line per service with whole addresses (or ``--json``)."""
    _use_topology(topology, recorded=True)
    rows = _stack().status()
    if as_json:
        print(json.dumps(rows))
    else:
        _print_status(rows)
    raise typer.Exit(0 if all(row["up"] for row in rows) else 1)


@stack_app.command("exec", context_settings={"allow_extra_args": True,
                                              "ignore_unknown_options": True})
def stack_exec(ctx: typer.Context) -> None:
    """Run a command (after `--`) with the stack up: reused if running, else started for it
    and stopped after. Its exit code is this command's. `make test` runs pytest this way."""
    import subprocess

    from etar_stack import running

    if not ctx.args:
        _fail(ConfigError("name the command to run, e.g. `etar stack exec -- pytest`"))
    _setup_logging()
    try:
        with running(get_settings()):
            code = subprocess.call(ctx.args)
    except EtarError as exc:
        _fail(exc)
    raise typer.Exit(code)


@stack_app.command("logs")
def stack_logs(
    service: Annotated[str | None, typer.Argument(help="one service; all when omitted")] = None,
    lines: Annotated[int, typer.Option("--lines", "-n")] = 50,
) -> None:
    """The last lines of the services' logs (kept under the state folder)."""
    try:
        for line in _stack().log_lines(service, lines):
            print(line)
    except EtarError as exc:
        _fail(exc)


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
) -> None:
    """Produce interaction events to Kafka (Avro, Schema Registry) from several processes."""
    from etar.producer import ProduceOptions
    from etar.producer import produce as run

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


def _ensure_stack() -> Stack:
    """The running native stack, started (detached) if it is not."""
    stack = _stack()
    try:
        if stack.read_state() is None:
            with console.status("starting the native stack (a first run fetches the jars)…"):
                stack.up_detached()
        from etar.airflow_api import PIPELINE_DAG, AirflowApi

        with AirflowApi() as api:
            api.set_paused(PIPELINE_DAG, False)
    except EtarError as exc:
        _fail(exc)
    return stack


def _print_urls() -> None:
    settings = get_settings()
    table = Table("what", "URL", "login", title="etar is running")
    table.add_row("Airflow (DAG etar_pipeline)", settings.airflow_api_url,
                  f"{settings.airflow_admin_user} / "
                  f"{settings.airflow_admin_password.get_secret_value()}")
    table.add_row("dashboard", f"http://{settings.bind_host}:{settings.dashboard_ui_port}", "")
    table.add_row("dashboard API docs", f"{settings.dashboard_api_url}/docs",
                  "POST /report: bearer ETAR_DASHBOARD_TOKEN")
    clickhouse = f"http://{settings.clickhouse_host}:{settings.clickhouse_port}"
    table.add_row("ClickHouse (read-only user, for IDEs)", clickhouse,
                  f"{settings.clickhouse_reader_user} / "
                  f"{settings.clickhouse_reader_password.get_secret_value()}")
    token = settings.jupyter_token.get_secret_value()
    table.add_row("JupyterLab (the workbook)",
                  f"http://{settings.bind_host}:{settings.jupyter_port}/lab?token={token}",
                  "token in the URL")
    Console(width=max(Console().width, 140)).print(table)


@app.command()
def up(
    rate: Annotated[float | None, typer.Option(help="events/s of the producer")] = None,
    processes: Annotated[int, typer.Option(help="producer processes")] = 2,
) -> None:
    """The main job: the native stack with Airflow, its URLs, and a producer.

    Until Ctrl-C the producer streams events and Airflow's etar_pipeline DAG runs every
    minute (extract → analyze → report), so the dashboard fills up. The stack keeps running
    after; `etar stack down` stops it.
    """
    import signal
    import subprocess

    _setup_logging()
    stack = _ensure_stack()
    _print_status(stack.status())
    _print_urls()
    producer = subprocess.Popen(
        [sys.executable, "-m", "etar", "produce", "--processes", str(processes),
         *(["--rate", str(rate)] if rate is not None else [])])
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C
    try:
        producer.wait()
    except KeyboardInterrupt:
        console.print("stopping the producer; the stack keeps running (`etar stack down`)")
    finally:
        producer.terminate()
        producer.wait(30)


@app.command()
def demo(
    minutes: Annotated[int, typer.Option(min=1, max=30, help="minutes to produce")] = 3,
    rate: Annotated[float, typer.Option(min=1, help="events/s")] = 200.0,
    as_json: Annotated[bool, typer.Option("--json", help="also print the checks as JSON")]
    = False,
) -> None:
    """See it work: produce N minutes, let Airflow run them, check every stage agrees.

    Needs the topic to itself (stop `etar up`'s producer first). Exit code 1 on any mismatch.
    """
    from etar.demo import run_demo

    _setup_logging(quiet=True)
    _ensure_stack()
    try:
        checks = run_demo(minutes, rate, say=console.print)
    except EtarError as exc:
        _fail(exc)
    table = Table("minute (UTC)", "produced", "ClickHouse", "Spark", "dashboard", "DAG run",
                  "minute end → dashboard", "")
    for check in checks:
        table.add_row(str(check.minute), *(str(v) if v is not None else "-" for v in (
            check.produced, check.clickhouse, check.spark, check.dashboard, check.dag_state)),
            f"{check.latency_s:.1f} s" if check.latency_s is not None else "-",
            "[green]ok[/]" if check.ok else "[red]MISMATCH[/]")
    Console(width=max(Console().width, 130)).print(table)
    if as_json:
        print(json.dumps([{"minute": str(c.minute), "produced": c.produced,
                           "clickhouse": c.clickhouse, "spark": c.spark,
                           "dashboard": c.dashboard, "dag_state": c.dag_state,
                           "latency_s": c.latency_s, "ok": c.ok} for c in checks]))
    raise typer.Exit(0 if all(c.ok for c in checks) else 1)


@app.command()
def sink() -> None:
    """Run the Kafka → ClickHouse sink in the foreground (the stack runs one already)."""
    from etar.sink import main

    main()


@app.command()
def partitions() -> None:
    """Rows and parts per minute partition of the events table."""
    from etar import warehouse

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
    from etar.reconcile import audit as audit_window

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
    from etar.extract import extract_minute

    print(_stage(extract_minute, minute) or "empty minute: nothing extracted")


@app.command()
def analyze(minute: MinuteOption) -> None:
    """Run the Spark job on one extracted minute (writes its JSON report next to it)."""
    from etar.pipeline import analyze as analyze_minute

    run = _stage(analyze_minute, minute)
    print(f"report={run.report} wall_s={run.wall_s:.1f} startup_s={run.startup_s:.1f} "
          f"compute_s={run.compute_s:.1f}")


@app.command()
def report(minute: MinuteOption) -> None:
    """Post one minute's JSON report to the dashboard API."""
    from etar.report import report_minute

    print(json.dumps(_stage(report_minute, minute)))


@app.command("run-minute")
def run_minute(minute: MinuteOption) -> None:
    """Extract → analyze → report one minute, without Airflow (skips an empty minute)."""
    from etar.pipeline import run_minute as run

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
    from etar.replay import STAGES
    from etar.replay import replay as run_replay

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
