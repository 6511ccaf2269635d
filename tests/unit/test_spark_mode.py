"""The Spark mode (connect | submit) is decided in one place: ``etar.analysis.mode``."""

from __future__ import annotations

import re

from etar.analysis.mode import on_connect, spark_mode
from etar.config import Settings
from tests import REPO_ROOT


def test_the_mode_follows_the_setting() -> None:
    assert on_connect(Settings(_env_file=None, spark_mode="connect"))
    assert not on_connect(Settings(_env_file=None, spark_mode="submit"))
    assert spark_mode(Settings(_env_file=None, spark_mode="submit")) == "submit"


def test_nothing_else_reads_the_setting_to_choose() -> None:
    """The DAG, the pipeline, the workbook and the stack ask ``on_connect``; none compares
    ``spark_mode`` itself (tests may: they check what the mode gave)."""
    compare = re.compile(r"spark_mode\s*[!=]=|[!=]=\s*\S*spark_mode\b")
    mode_module = REPO_ROOT / "etar" / "analysis" / "mode.py"
    sources = [p for folder in ("etar", "dags", "dashboard", "spark", "benchmarks")
               for p in (REPO_ROOT / folder).rglob("*.py") if p != mode_module]
    sources += sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
    deciding = [str(p.relative_to(REPO_ROOT)) for p in sources if compare.search(p.read_text())]
    assert deciding == []
