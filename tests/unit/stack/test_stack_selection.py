"""`ETAR_STACK_SERVICES` picks a partial stack; a typo is named, not ignored."""

from __future__ import annotations

import pytest

from etar.config import Settings
from etar.errors import ConfigError
from etar_stack import all_services, selected_services


def test_empty_selection_is_the_whole_stack() -> None:
    settings = Settings(stack_services="")
    assert [s.name for s in selected_services(settings)] == [
        s.name for s in all_services(settings)]


def test_selection_keeps_dependency_order() -> None:
    settings = Settings(stack_services="sink, kafka,clickhouse")
    assert [s.name for s in selected_services(settings)] == ["kafka", "clickhouse", "sink"]


def test_unknown_service_is_named() -> None:
    with pytest.raises(ConfigError, match="kafak"):
        selected_services(Settings(stack_services="kafka,kafak"))
