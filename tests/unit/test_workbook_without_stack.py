"""The workbook where the embedded stack is not installed (the compose jupyter)."""

from __future__ import annotations

import sys

import pytest

from etar import workbook


def test_services_is_empty_without_the_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "etar_stack", None)  # import raises
    services = workbook.services()
    assert services.empty and list(services.columns) == workbook.SERVICE_COLUMNS
    managed = services[services["managed"]]  # notebook 00's check: nothing managed, all up
    assert managed["up"].all()
