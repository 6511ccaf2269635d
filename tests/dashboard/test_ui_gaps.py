"""The dashboard's "Minutes not reported yet" panel: ``dashboard/ui.py`` run by Streamlit's
``AppTest`` (in this process) on a table and a bucket of the test's own on the stack's
ClickHouse and S3."""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from etar.config import Settings, get_settings
from etar.extract import storage
from etar.minute import Minute
from etar.warehouse import table as warehouse
from tests.integration.lanes import recent_minute

pytestmark = pytest.mark.integration

UI = Path(__file__).resolve().parents[2] / "dashboard" / "ui.py"
ROWS = 7


@pytest.fixture
def ui_lane(stack_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A table and a bucket of the test's own, which the UI's ``get_settings()`` reads (its
    report-totals cache in ``tmp_path``); the process's settings are restored after."""
    suffix = uuid.uuid4().hex[:10]
    settings = stack_settings.model_copy(update={
        "clickhouse_table": f"lane_{suffix}", "s3_bucket": f"lane-{suffix}",
        "state_dir": tmp_path / ".etar"})
    warehouse.apply_schema(settings=settings)
    storage.ensure_bucket(settings)
    variables = settings.environ("clickhouse_table", "s3_bucket", "state_dir")
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    get_settings.cache_clear()
    try:
        yield settings
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()
        warehouse.client(settings).command(f"DROP TABLE IF EXISTS `{settings.clickhouse_table}`")
        storage.drop_bucket(settings)


def _insert_rows(settings: Settings, minute: Minute, count: int) -> None:
    """``count`` events stamped inside ``minute``, straight into the table (no Kafka)."""
    warehouse.client(settings).command(
        f"INSERT INTO `{settings.clickhouse_table}` (event_id, user_id, session_id, event_type, "
        "status, device, country, page_url, event_ts) SELECT generateUUIDv4(number), "
        "generateUUIDv4(number + 1000), generateUUIDv4(number + 2000), 'PAGE_VIEW', 'SUCCESS', "
        "'DESKTOP', 'FR', '/', {start:DateTime64(3, 'UTC')} + toIntervalMillisecond(number) "
        f"FROM numbers({count})", parameters={"start": minute.sql_param})


def _put_report(settings: Settings, minute: Minute, total: int) -> None:
    body = json.dumps({"minute": str(minute), "total_events": total}).encode()
    storage.upload(minute.json_name, io.BytesIO(body), "application/json", len(body), settings)


def _texts(elements: object) -> list[str]:
    return [str(element.value) for element in elements]  # type: ignore[attr-defined]


def test_a_minute_with_rows_and_no_report_is_listed_until_it_is_reported(
        ui_lane: Settings) -> None:
    # Hours old, inside the retention: no run of the stack's own pipeline is for it, so the
    # minute cannot show as "running" even when Airflow is up.
    minute = recent_minute(20 * 60)
    _insert_rows(ui_lane, minute, ROWS)
    assert warehouse.count_minute(minute, settings=ui_lane) == ROWS

    app = AppTest.from_file(str(UI), default_timeout=60)
    app.run()
    assert not app.exception, app.exception
    assert "Minutes not reported yet" in _texts(app.subheader)
    assert any("no report equal to their count: 1." in text for text in _texts(app.warning)), (
        _texts(app.warning))
    shown = app.dataframe[-1].value
    assert shown.to_dict("records") == [
        {"minute": str(minute), "rows": ROWS, "reported": None, "state": "missing"}]

    _put_report(ui_lane, minute, ROWS)
    app.run()
    assert not app.exception, app.exception
    assert any(text.startswith("Every minute with events is reported")
               for text in _texts(app.success)), _texts(app.success)
    assert not any("no report equal to their count" in text for text in _texts(app.warning))
