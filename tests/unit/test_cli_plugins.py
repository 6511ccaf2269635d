"""The etar CLI with the embedded stack installed (the checkout): `stack`, `up` and `demo`
come from etar-stack's `etar.cli` entry point, not the stand-ins."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

from tests import REPO_ROOT


def _etar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "etar", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_stack_registers_its_commands_through_the_entry_point() -> None:
    (plugin,) = entry_points(group="etar.cli", name="stack")
    assert plugin.value == "etar_stack.cli:register"
    result = _etar("--help")
    assert result.returncode == 0, result.stderr
    assert "needs etar-stack" not in result.stdout
    for command in ("stack", "up", "demo", "run-minute"):
        assert f" {command} " in result.stdout
    stack = _etar("stack", "--help")
    assert stack.returncode == 0, stack.stderr
    for command in ("install", "up", "down", "status", "exec", "logs"):
        assert f" {command} " in stack.stdout
