"""Replay a minute through the workbook: notebooks 03 → 04 → 05 executed by papermill.

Each run writes new output notebooks under ``runs/<minute stem>/`` (the record of that run:
code, parameters, logs, errors and charts); the source notebooks are never modified. Each
executed notebook, failed or not, is also rendered to ``<name>.html`` (nbconvert) with a
``<name>.run.json`` summary beside it (:class:`NotebookRun`): the dashboard API serves both
for the replay DAG's runs. The minute is checked before any notebook starts; a failing cell
is reported with its notebook, cell number and error.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from etar.config import Settings, get_settings
from etar.errors import EtarError
from etar.minute import InvalidMinute, Minute

STAGES = ("03_extract.ipynb", "04_analyze.ipynb", "05_report.ipynb")
"""The notebooks a replay runs, in order."""
KERNEL = "python3"
SUMMARY_SUFFIX = ".run.json"
"""Suffix of an executed notebook's summary (``03_extract.run.json``)."""

log = logging.getLogger(__name__)


class ReplayFailed(EtarError):
    """A notebook of the replay raised."""


@dataclass
class Replay:
    """A finished replay: its executed notebooks and the report the last one posted."""

    minute: Minute
    notebooks: list[Path]
    report: dict[str, Any]


@dataclass(frozen=True)
class NotebookRun:
    """How one executed notebook ended: ``cell`` is the failing cell's execution count and
    ``cell_index`` its position (0-based) in the executed notebook; None when it succeeded."""

    notebook: str
    status: str  # "succeeded" | "failed"
    cell: int | None = None
    cell_index: int | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def summarize(executed: Path) -> NotebookRun:
    """The outcome of an executed notebook: the first code cell with an error output fails it."""
    import nbformat

    notebook = nbformat.read(str(executed), as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return NotebookRun(executed.stem, "failed", cell.get("execution_count"), index,
                                   f"{output.get('ename')}: {output.get('evalue')}")
    return NotebookRun(executed.stem, "succeeded")


def publish(executed: Path) -> NotebookRun | None:
    """Render ``executed`` to ``<name>.html`` and write its ``<name>.run.json`` summary beside
    it; None (logged) when there is no notebook to render, so a replay's own error stays the
    one reported."""
    from nbconvert import HTMLExporter

    try:
        run = summarize(executed)
        html, _ = HTMLExporter(template_name="lab").from_filename(str(executed))
    except Exception as exc:  # no output notebook (the kernel never started), or unreadable
        log.warning("no HTML for %s: %s", executed, exc)
        return None
    executed.with_suffix(".html").write_text(html, encoding="utf-8")
    executed.with_suffix(SUMMARY_SUFFIX).write_text(json.dumps(asdict(run)), encoding="utf-8")
    return run


def published(folder: Path) -> list[NotebookRun]:
    """The summaries of the notebooks rendered in ``folder``, in stage order."""
    runs = []
    for name in STAGES:
        summary = folder / name.replace(".ipynb", SUMMARY_SUFFIX)
        if summary.is_file() and (folder / name.replace(".ipynb", ".html")).is_file():
            runs.append(NotebookRun(**json.loads(summary.read_text(encoding="utf-8"))))
    return runs


def expire_runs(before: Minute, settings: Settings | None = None) -> list[str]:
    """Delete the replay DAG's executed notebooks of minutes before ``before`` (the table's
    retention, as the bucket's objects): ``notebook_runs_dir/<stem>/``. Folders not named
    after a minute are left alone. Returns the deleted folders' names, oldest first."""
    runs = (settings or get_settings()).notebook_runs_dir
    if not runs.is_dir():
        return []
    old = []
    for folder in runs.iterdir():
        try:
            minute = Minute.from_object_name(folder.name)
        except InvalidMinute:
            continue
        if folder.is_dir() and minute < before:
            old.append((minute, folder))
    for _, folder in sorted(old):
        shutil.rmtree(folder, ignore_errors=True)
    return [folder.name for _, folder in sorted(old)]


def notebooks_dir(settings: Settings | None = None) -> Path:
    """The source notebooks (``<project>/notebooks``)."""
    return (settings or get_settings()).project_dir / "notebooks"


def run_dir(minute: Minute, settings: Settings | None = None) -> Path:
    """Where a replay of ``minute`` keeps its executed notebooks: ``runs/<stem>/``."""
    return (settings or get_settings()).project_dir / "runs" / minute.stem


def execute(notebook: Path, output: Path, parameters: dict[str, Any]) -> None:
    """Run one notebook with papermill, then :func:`publish` it (HTML, summary), failed or
    not; ReplayFailed naming the notebook and cell."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output.parent.mkdir(parents=True, exist_ok=True)
    # The kernel runs in notebooks/ (as in JupyterLab): it finds the stack by these two.
    os.environ.update(get_settings().environ("state_dir", "project_dir"))
    try:
        papermill.execute_notebook(str(notebook), str(output), parameters=parameters,
                                   kernel_name=KERNEL, progress_bar=False,
                                   cwd=str(notebook.parent))
    except PapermillExecutionError as exc:
        raise ReplayFailed(f"{notebook.name} failed in cell [{exc.exec_count}] "
                           f"(cell #{exc.cell_index}): {exc.ename}: {exc.evalue} — "
                           f"the executed notebook is {output}") from None
    finally:
        publish(output)


def replay(minute: str | Minute, settings: Settings | None = None,
           output_dir: Path | None = None,
           progress: Callable[[int, str], None] | None = None) -> Replay:
    """Run 03 → 04 → 05 for a closed minute (refused before any notebook starts otherwise).

    ``progress(index, notebook)`` is called before each notebook starts.
    """
    from etar.workbook import records

    settings = settings or get_settings()
    parsed = Minute.parse(minute)
    source = notebooks_dir(settings)
    missing = [name for name in STAGES if not (source / name).exists()]
    if missing:
        raise EtarError(f"notebooks missing in {source}: {', '.join(missing)} "
                        "(set ETAR_PROJECT_DIR to the checkout)")
    target = output_dir or run_dir(parsed, settings)
    executed = []
    for index, name in enumerate(STAGES):
        if progress is not None:
            progress(index, name)
        execute(source / name, target / name, {"minute": str(parsed)})
        executed.append(target / name)
    report: dict[str, Any] = records(executed[-1]).get("report", {})
    return Replay(parsed, executed, report)
