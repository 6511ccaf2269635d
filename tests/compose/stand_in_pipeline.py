"""What the stand-in `docker compose run producer etar produce --count N …` does in
tests/compose/test_compose_check.py: in place of Kafka, Connect, Airflow and Spark, it writes the
current minute's rows into a real ClickHouse HTTP endpoint and posts that minute's report to
the real dashboard API, as the scenario in ``$STAND_IN_PIPELINE`` (JSON) says:

- ``stored``: distinct events the minute gets in the table (``null``: the table is not touched);
  ``duplicates`` of them are inserted twice and ``neighbour`` rows go into the minute before,
  so only a FINAL count of exactly that minute finds ``stored``;
- ``reported``: the report's ``total_events`` (``null``: no report is posted).

Run as a script (``python stand_in_pipeline.py <docker's arguments>``).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta

from etar.config import Settings
from etar.report.minute_report import post_report
from etar.warehouse import table as warehouse


def _insert(settings: Settings, start: datetime, first: int, rows: int) -> None:
    """``rows`` events in the minute of ``start``, event ids numbered from ``first``."""
    table = f"`{settings.clickhouse_database}`.`{settings.clickhouse_table}`"
    warehouse.client(settings).command(
        f"INSERT INTO {table} (event_id, user_id, session_id, event_type, status, device, "
        "country, page_url, event_ts) SELECT "
        f"toUUID(concat('00000000-0000-4000-8000-', leftPad(toString({first} + number), 12, "
        "'0'))), generateUUIDv4(number), generateUUIDv4(number), 'PAGE_VIEW', 'SUCCESS', "
        f"'DESKTOP', 'DE', '/', addMilliseconds(toDateTime64('{start:%Y-%m-%d %H:%M:%S}', 3, "
        f"'UTC'), number * 50) FROM numbers({rows})")


def main(argv: list[str]) -> int:
    scenario = json.loads(os.environ["STAND_IN_PIPELINE"])
    produced = int(argv[argv.index("--count") + 1])
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    settings = Settings(_env_file=None, **scenario["settings"])
    if scenario["stored"] is not None:
        warehouse.client(settings, database="default").command(
            f"CREATE DATABASE IF NOT EXISTS `{settings.clickhouse_database}`")
        warehouse.apply_schema(settings=settings)
        _insert(settings, minute, 0, scenario["stored"])
        _insert(settings, minute, 0, scenario.get("duplicates", 0))
        _insert(settings, minute - timedelta(minutes=1), 10**6, scenario.get("neighbour", 0))
    if scenario["reported"] is not None:
        total = scenario["reported"]
        post_report({"minute": f"{minute:%Y-%m-%dT%H:%M}:00Z", "total_events": total,
                     "total_errors": 0,
                     "by_event_type": {"PAGE_VIEW": {"success": total, "error": 0}}}, settings)
    print(f"stand-in pipeline: asked for {produced} events; minute {minute:%H:%M}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
