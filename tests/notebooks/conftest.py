"""Fixtures of the workbook tests: an empty past minute of the main topic and table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from etar.config import Settings
from etar.minute import Minute
from etar.warehouse import table as warehouse
from tests import REPO_ROOT
from tests.integration.lanes import recent_minute

NOTEBOOKS = REPO_ROOT / "notebooks"


def empty_minute(settings: Settings, taken: set[Minute] | None = None) -> Minute:
    """A closed minute 10 to 120 minutes ago that holds no events (and no one else writes to:
    the scheduled pipeline and the notebooks' own demo minutes are more recent)."""
    for ago in range(10, 120):
        minute = recent_minute(ago)
        if minute not in (taken or set()) and warehouse.count_minute(minute,
                                                                     settings=settings) == 0:
            return minute
    raise AssertionError("no empty minute in the last two hours")


@pytest.fixture
def free_minute(stack_settings: Settings) -> Minute:
    return empty_minute(stack_settings)


def etar(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """The ``etar`` CLI of this checkout, run from its root."""
    return subprocess.run([sys.executable, "-m", "etar", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO_ROOT, check=False)


def notebook(name: str) -> Path:
    return NOTEBOOKS / name
