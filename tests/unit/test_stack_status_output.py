"""`etar stack status` off a terminal (a log, a pipe, CI): whole values, and ``--json``."""

from __future__ import annotations

import json
import subprocess
import sys

from etar.config import get_settings
from etar_stack import stack
from tests import REPO_ROOT


def _status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "etar", "stack", "status", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                          check=False)


def test_piped_status_prints_every_address_whole_one_service_a_line() -> None:
    expected = {s.name: s.url for s in stack(get_settings()).services}
    result = _status()
    assert result.returncode in (0, 1), result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(expected) and "…" not in result.stdout and "│" not in result.stdout
    for line, (name, url) in zip(lines, expected.items(), strict=True):
        assert line.split()[0] == name and url in line, line  # e.g. the Jupyter token hint


def test_json_status_lists_each_service_with_its_whole_address() -> None:
    result = _status("--json")
    rows = json.loads(result.stdout)
    expected = {s.name: s.url for s in stack(get_settings()).services}
    assert {row["service"]: row["url"] for row in rows} == expected
    assert result.returncode == (0 if all(row["up"] for row in rows) else 1)
