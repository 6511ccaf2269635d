"""Where a minute's Spark analysis runs, decided here and nowhere else (``ETAR_SPARK_MODE``).

``connect``: a client call to the warm Spark Connect server (:mod:`etar.analysis.remote`), the
native stack's default. ``submit``: the job submitted with ``spark-submit``
(:mod:`etar.analysis.submit`; in Airflow a ``SparkSubmitOperator`` from the same spec), the
compose stack's Spark cluster. Both run the same aggregation and write the same report. The DAG
(at parse time), :func:`analyze_minute`, the workbook's interactive session and the native
stack (whether to run the Connect server) all ask :func:`on_connect`.

Cheap to import: the DAG file calls it while being parsed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from etar.config import Settings, get_settings
from etar.minute import Minute

if TYPE_CHECKING:
    from etar.analysis.submit import JobRun

SparkMode = Literal["connect", "submit"]


def spark_mode(settings: Settings | None = None) -> SparkMode:
    """The way minutes are analysed: ``connect`` or ``submit``."""
    return (settings or get_settings()).spark_mode


def on_connect(settings: Settings | None = None) -> bool:
    """True when minutes are analysed on the Spark Connect server, False for spark-submit."""
    return spark_mode(settings) == "connect"


def analyze_minute(minute: Minute, settings: Settings | None = None) -> JobRun:
    """The minute's Spark analysis (its Parquet object → its JSON report), the configured way."""
    settings = settings or get_settings()
    if on_connect(settings):
        from etar.analysis.remote import analyze_minute as remote

        return remote(minute, settings)
    from etar.analysis.submit import analyze_minute as submitted

    return submitted(minute, settings)
