"""Fixtures shared by every test folder.

``stack_settings``: one native stack for the whole session. It is reused when
``etar stack status`` finds every service up; otherwise it is started for the session and
stopped at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from etar.config import Settings, get_settings
from etar.native import running


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    settings = get_settings()
    with running(settings):
        yield settings


@pytest.fixture
def unique() -> str:
    """A short unique suffix so runs never collide on names."""
    return uuid.uuid4().hex[:10]
