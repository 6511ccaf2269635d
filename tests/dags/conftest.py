"""Fixtures of the DAG tests: the pipeline DAG paused while Airflow's own runner runs it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from etar.config import Settings
from tests.pipeline_state import pipeline_paused


@pytest.fixture
def paused_pipeline(stack_settings: Settings) -> Iterator[None]:
    """The scheduler leaves etar_pipeline's runs alone (as it does for a paused DAG), so a
    `dag.test` run is only driven by the test; the DAG's state is restored after."""
    with pipeline_paused(stack_settings, True):
        yield
