"""Fixtures of the DAG tests: the pipeline DAG paused while Airflow's own runner runs it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from etar.airflow_api import PIPELINE_DAG, AirflowApi
from etar.config import Settings


@pytest.fixture
def paused_pipeline(stack_settings: Settings) -> Iterator[None]:
    """The scheduler leaves etar_pipeline's runs alone (as it does for a paused DAG), so a
    `dag.test` run is only driven by the test; the DAG's state is restored after."""
    with AirflowApi(stack_settings) as api:
        was_paused = bool(api.dag(PIPELINE_DAG)["is_paused"])
        api.set_paused(PIPELINE_DAG, True)
        try:
            yield
        finally:
            api.set_paused(PIPELINE_DAG, was_paused)
