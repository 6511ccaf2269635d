"""The `etar_pipeline` DAG paused or unpaused for the length of a test, its state restored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from etar.config import Settings
from etar.orchestration.airflow_api import PIPELINE_DAG, AirflowApi


@contextmanager
def pipeline_paused(settings: Settings, paused: bool) -> Iterator[AirflowApi]:
    """The API client, with etar_pipeline (un)paused until the block ends."""
    with AirflowApi(settings, timeout=30) as client:
        was_paused = bool(client.dag(PIPELINE_DAG)["is_paused"])
        client.set_paused(PIPELINE_DAG, paused)
        try:
            yield client
        finally:
            client.set_paused(PIPELINE_DAG, was_paused)
