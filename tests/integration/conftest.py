"""One native stack for the whole integration session.

Reuses the stack when ``etar stack status`` finds every service up; otherwise starts it for
the session and stops it at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from etar.config import Settings, get_settings
from etar.native import stack as native_stack


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    settings = get_settings()
    stack = native_stack(settings)
    started = False
    if not stack.is_up():
        stack.up_detached()
        started = True
    try:
        yield settings
    finally:
        if started:
            stack.down()


@pytest.fixture
def unique() -> str:
    """A short unique suffix so runs never collide on names."""
    return uuid.uuid4().hex[:10]
