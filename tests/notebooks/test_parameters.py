"""The notebooks' parameter contract: documented by `papermill --help-notebook`, checked first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

from etar.config import Settings
from tests.notebooks.conftest import NOTEBOOKS, etar, notebook

EXPECTED = {
    "00_stack.ipynb": {"max_subjects": "int"},
    "01_produce.ipynb": {"rate": "float", "duration": "float", "processes": "int",
                         "error_rate": "float", "minute": "str", "decode": "int"},
    "02_partitions.ipynb": {"minute": "str", "last": "int"},
    "03_extract.ipynb": {"minute": "str", "preview": "int", "write": "str", "demo": "int"},
    "04_analyze.ipynb": {"minute": "str", "write": "str", "demo": "int"},
    "05_report.ipynb": {"minute": "str", "write": "str", "demo": "int"},
}


def test_every_notebook_is_listed() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_contract_of_each_notebook(name: str) -> None:
    nb = nbformat.read(str(notebook(name)), as_version=4)
    assert nb.cells[0].source.splitlines() == ["%load_ext autoreload", "%autoreload 2"]
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for line in tagged[0].source.splitlines():
        assert ":" in line.split("=")[0] and "  # " in line, f"untyped/uncommented: {line}"
    assert any(c.cell_type == "markdown" for c in nb.cells)
    assert nb.cells[-1].source.splitlines()[-1].startswith("assert")
    assert all(not c.get("outputs") and not c.get("execution_count")
               for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_help_notebook_lists_every_parameter_with_type_and_comment(name: str) -> None:
    result = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook",
                             str(notebook(name))], capture_output=True, text=True, check=True)
    tagged = next(c for c in nbformat.read(str(notebook(name)), as_version=4).cells
                  if "parameters" in c.metadata.get("tags", []))
    help_text = " ".join(result.stdout.split())
    for line in tagged.source.splitlines():
        param, comment = line.split("  # ", 1)
        target, annotation = (part.strip() for part in param.split("=")[0].split(":"))
        assert EXPECTED[name][target] == annotation
        assert f"{target}: {annotation} (default" in help_text, result.stdout
        assert " ".join(comment.split()) in help_text, result.stdout


def _fails(name: str, tmp_path: Path, **parameters: object) -> PapermillExecutionError:
    with pytest.raises(PapermillExecutionError) as failure:
        papermill.execute_notebook(str(notebook(name)), str(tmp_path / name),
                                   parameters=parameters, kernel_name="python3",
                                   progress_bar=False, cwd=str(NOTEBOOKS))
    return failure.value


@pytest.mark.parametrize(("parameters", "message"), [
    ({"write": "prod"}, "write='prod' must be one of 'auto', 'sandbox', 'live'"),
    ({"demo": -1}, "demo=-1 must be >= 0"),
    ({"demo": 10, "write": "live"}, "demo events go to the sandbox only"),
])
def test_bad_write_or_demo_fails_before_any_work(parameters: dict[str, object], message: str,
                                                 tmp_path: Path) -> None:
    error = _fails("03_extract.ipynb", tmp_path, **parameters)
    assert error.ename == "NotebookParameterError" and message in error.evalue, error.evalue
    assert error.exec_count == 4  # autoreload, parameters, injected parameters, the check


def test_a_negative_rate_fails_in_the_parameter_check(tmp_path: Path) -> None:
    error = _fails("01_produce.ipynb", tmp_path, rate=-5.0)
    assert error.ename == "NotebookParameterError"
    assert "rate=-5.0 must be > 0" in error.evalue
    assert error.exec_count == 4  # autoreload, parameters, injected parameters, the check


@pytest.mark.parametrize("name", ["03_extract.ipynb", "04_analyze.ipynb", "05_report.ipynb"])
def test_a_malformed_minute_fails_in_the_parameter_check(name: str, tmp_path: Path) -> None:
    error = _fails(name, tmp_path, minute="yesterday at ten")
    assert error.ename == "NotebookParameterError"
    assert "minute='yesterday at ten'" in error.evalue and "is not a minute" in error.evalue


@pytest.mark.parametrize(("minute", "message"), [
    ("2026-13-01T10:30", "is not a minute"),
    ("2026-01-01", "names a day, not a minute"),
    ("2099-01-01T10:30", "has not ended yet"),
])
def test_replay_refuses_a_bad_minute_before_any_notebook(minute: str, message: str,
                                                         stack_settings: Settings) -> None:
    result = etar("replay", "--minute", minute, timeout=60)
    assert result.returncode == 1
    assert message in result.stderr, result.stderr
    assert "03_extract" not in result.stderr and result.stdout == ""
