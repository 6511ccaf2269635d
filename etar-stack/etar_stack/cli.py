"""``etar stack …``, ``etar up`` and ``etar demo``: the commands the embedded stack adds to the
``etar`` CLI (``register``, the ``etar.cli`` entry point of this distribution)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from etar.cli import _fail, _setup_logging, console
from etar.config import get_settings
from etar.errors import ConfigError, EtarError

if TYPE_CHECKING:
    from etar_stack.supervisor import Stack

stack_app = typer.Typer(help="The native stack: every service on this machine, no Docker.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``stack``, ``up`` and ``demo`` to the etar CLI."""
    app.add_typer(stack_app, name="stack")
    app.command()(up)
    app.command()(demo)


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


@stack_app.command("hold")
def stack_hold(
    service: Annotated[str, typer.Argument(help="the service to keep down if it exits")],
    seconds: Annotated[float, typer.Option("--seconds", "-s", min=1, max=86_400)] = 600,
) -> None:
    """Do not restart SERVICE for SECONDS if it exits (stop it yourself for maintenance)."""
    try:
        until = _stack().hold(service, seconds)
    except EtarError as exc:
        _fail(exc)
    console.print(f"{service} is not restarted until "
                  f"{time.strftime('%H:%M:%S', time.localtime(until))}")


def _ensure_stack() -> Stack:
    """The running native stack, started (detached) if it is not."""
    stack = _stack()
    try:
        if stack.read_state() is None:
            with console.status("starting the native stack (a first run fetches the jars)…"):
                stack.up_detached()
        from etar.orchestration.airflow_api import PIPELINE_DAG, AirflowApi

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
