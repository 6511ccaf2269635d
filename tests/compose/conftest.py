"""The compose file as compose-go loads it, once for every compose test."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.compose.test_static import COMPOSE, _composecheck


@pytest.fixture(scope="session")
def project() -> dict[str, Any]:
    """docker-compose.yml as compose-go loads it (schema, interpolation, references)."""
    result = _composecheck(COMPOSE)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded
