"""Fresh virtual environments holding etar as users install it: the built wheel (not the
checkout), with some of its extras, every version pinned to uv.lock's.

Each is made by ``uv pip install "<wheel>[extras]"`` constrained to ``uv export``'s pins and
with the project's overrides, so what gets installed is what the wheel's metadata asks for at
the lock's versions. uv links the packages from its cache: a venv takes seconds, offline once
the checkout's environment was synced.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests import REPO_ROOT

INSTALL_TIMEOUT = 300
"""Seconds one venv may take to install (from the uv cache it takes far less)."""


def uv() -> str:
    """The uv that runs the tests (``uv run`` names itself in ``UV``)."""
    found = os.environ.get("UV") or shutil.which("uv")
    if found is None:
        pytest.fail("uv not found: run the tests with `uv run pytest` (as `make test` does)")
    return found


def _run(*args: str | Path, cwd: Path = REPO_ROOT, timeout: float = INSTALL_TIMEOUT) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in {"VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"}}
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{args}: {result.stderr[-3000:]}"


def build_wheel(package: str, out: Path) -> Path:
    """The wheel of one workspace member (``etar`` or ``etar-stack``)."""
    _run(uv(), "build", "--wheel", "--package", package, "--out-dir", out, timeout=300)
    (built,) = out.glob(f"{package.replace('-', '_')}-*.whl")
    return built


def make_venv(root: Path, wheel: Path, extras: tuple[str, ...] = ()) -> Path:
    """A venv under ``root`` with ``wheel[extras]`` at the lock's versions; its folder."""
    root.mkdir(parents=True, exist_ok=True)
    pins = root / "pins.txt"
    _run(uv(), "export", "--frozen", "--package", "etar", "--no-dev", "--no-emit-workspace",
         "--no-hashes", "--no-header", "--no-annotate", "--format", "requirements-txt",
         *(f"--extra={extra}" for extra in extras), "--output-file", pins)
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    overrides = root / "overrides.txt"
    overrides.write_text("\n".join(pyproject["tool"]["uv"]["override-dependencies"]) + "\n")
    venv = root / "venv"
    _run(uv(), "venv", "--python", sys.executable, venv)
    requirement = f"etar[{','.join(extras)}] @ {wheel.as_uri()}" if extras else str(wheel)
    _run(uv(), "pip", "install", "--python", venv / "bin" / "python", "--constraints", pins,
         "--overrides", overrides, requirement)
    return venv


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a process in such a venv: no ETAR_* of the checkout, no PYTHON*."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ETAR_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, **extra}


def run_in(venv: Path, *args: str, cwd: Path, env: dict[str, str] | None = None,
           timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``args[0]`` from the venv's bin folder (``python``, ``etar``…), outside the checkout."""
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=cwd,
                          env=env or clean_env(PATH=f"{venv / 'bin'}:{os.environ['PATH']}"),
                          capture_output=True, text=True, timeout=timeout, check=False)
