"""Write notebooks/00_stack … 05_report from the cell sources below (stripped, no outputs).

The notebooks are the source of truth once written; this script is how they were made and
rebuilds them in one go: `uv run python tools/make_notebooks.py`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent.parent / "notebooks"
AUTORELOAD = "%load_ext autoreload\n%autoreload 2"
MINUTE = ('minute: str = ""  # UTC minute, e.g. 2026-01-01T10:30; '
          'empty: a small batch produced 3 minutes ago')


def notebook(title: str, narrative: str, parameters: str, *cells: str) -> nbformat.NotebookNode:
    body = [new_code_cell(AUTORELOAD), new_markdown_cell(f"# {title}\n\n{narrative.strip()}"),
            new_code_cell(parameters.strip(), metadata={"tags": ["parameters"]})]
    for source in cells:
        source = source.strip("\n")
        if source.startswith("## "):
            body.append(new_markdown_cell(source))
        else:
            body.append(new_code_cell(source))
    nb = new_notebook(cells=body, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


NOTEBOOKS = {
    "00_stack.ipynb": notebook(
        "00 · The stack",
        """
Everything the pipeline talks to, checked from here: every service of the native stack
(`etar stack status`), the event topic and its partitions, the schemas registered in the
Schema Registry, the ClickHouse table (`clickhouse_table_schema.sql`) and the bucket.

*Design choices*: every address comes from one `Settings` (environment / `.env`), so this
notebook, the CLI, the DAG and the tests see the same stack. The topic is partitioned by
user (the key is the user's UUID), the table by minute.
""",
        "max_subjects: int = 20  # registry subjects to list (other tests' lanes included)",
        """
from etar import warehouse, workbook
from etar.config import get_settings

settings = get_settings()
workbook.positive("max_subjects", max_subjects)
""",
        "## Services\nEach row is a service's own readiness probe (a metadata request, an "
        "HTTP call…).",
        "services = workbook.services(settings)\nservices",
        "## Topic and partitions",
        "partitions = workbook.topic_partitions(settings)\npartitions",
        "## Registered schemas",
        "schemas = workbook.schema_versions(settings)\nschemas.head(max_subjects)",
        "## The table\nPartitioned by `event_minute`, with a TTL that bounds the partition count.",
        "ddl = warehouse.table_ddl(settings)\nprint(ddl)",
        "## The bucket",
        "bucket = workbook.bucket(settings)\nbucket",
        """
managed = services[services["managed"]]
assert not managed.empty, "no native stack is running: `etar stack up --detach`"
assert managed["up"].all(), managed[~managed["up"]]
assert len(partitions) == settings.kafka_topic_partitions
assert f"{settings.kafka_topic}-value" in set(schemas["subject"])
assert "PARTITION BY event_minute" in ddl and "TTL" in ddl
assert bucket["exists"]
""",
    ),
    "01_produce.ipynb": notebook(
        "01 · Produce",
        """
The producer sends Avro events (Confluent wire format: magic byte, schema id, Avro body) keyed
by the user's UUID (16 raw bytes) with an idempotent `SerializingProducer` (`acks=all`), paced
to `rate` events/s over `processes` processes. Events are stamped inside one past `minute`, so
the scheduled pipeline never races this notebook, and the minute's row count shows the sink
stored them. Then a few messages are decoded back through the registry, and the registry's
compatibility check is shown on a scratch subject: a compatible v2 is accepted, an
incompatible change is refused with HTTP 409.
""",
        """
rate: float = 200.0  # events/s over all processes (> 0)
duration: float = 5.0  # seconds to produce (> 0)
processes: int = 1  # producer processes (at least 1)
error_rate: float = 0.05  # share of events with status ERROR, between 0 and 1
minute: str = ""  # UTC minute stamped on the events, e.g. 2026-01-01T10:30; empty: 3 min ago
decode: int = 5  # messages to read back and decode through the registry
""",
        """
from etar import charts, warehouse, workbook
from etar.config import get_settings

settings = get_settings()
options = workbook.produce_options(rate, duration, processes, error_rate,
                                   minute=workbook.minute_param(minute))
workbook.positive("decode", decode)
target = options.minute = options.minute or workbook.recent_minute()
before = warehouse.count_minute(target, settings=settings)
target
""",
        "## Produce",
        """
summary, series = workbook.produce_measured(options, settings)
print(summary.line())
charts.throughput(series)
""",
        "## Stored by the sink\nThe minute's rows, per event type and status.",
        """
stored = workbook.wait_for_rows(target, before + summary.delivered, settings)
rows = warehouse.read_minute(target, settings=settings, uuid_as_text=True)
error_share = float((rows["status"] == "ERROR").mean())
workbook.record(minute=str(target), delivered=summary.delivered, failed=summary.failed,
                events_per_s=summary.events_per_s, stored=stored, error_share=error_share)
charts.events_per_type(rows, f"Events of {target}")
""",
        "## Decoded back through the registry",
        "decoded = workbook.decode_latest(decode, settings)\ndecoded",
        "## Schema evolution on a scratch subject",
        "evolution = workbook.schema_evolution(settings)\nevolution",
        """
assert summary.failed == 0 and summary.delivered == summary.sent > 0
assert summary.delivered <= rate * duration * 1.1 + processes
assert stored >= before + summary.delivered
assert len(decoded) == decode and decoded["schema_id"].gt(0).all()
assert evolution.versions == [1, 2] and evolution.v2_id != evolution.v1_id
assert evolution.rejected_status == 409, evolution.rejected_message
""",
    ),
    "02_partitions.ipynb": notebook(
        "02 · Partitions",
        """
`user_interactions` is a `ReplacingMergeTree` partitioned by `event_minute`: a minute's read
(`WHERE event_minute = {minute:DateTime}`, bound parameter) touches one partition only, the
sink inserts batches grouped by minute (never more partitions per insert than ClickHouse
allows), and a TTL drops old partitions so their count stays bounded.
""",
        """
minute: str = ""  # UTC minute whose read is explained; empty: latest closed minute with rows
last: int = 30  # most recent partitions to chart
""",
        """
from etar import charts, warehouse, workbook
from etar.config import get_settings

settings = get_settings()
target = workbook.minute_param(minute)
workbook.positive("last", last)
""",
        "## Rows and parts per minute",
        """
parts = warehouse.partitions(settings=settings)
target = (target or workbook.latest_closed_partition(parts)
          or workbook.demo_minute(settings=settings))
charts.partitions(parts.tail(last))
""",
        "## A minute's read prunes to its partition",
        """
plan = warehouse.minute_plan(target, settings=settings)
partition = warehouse.partitions(settings=settings).set_index("event_minute")
print(target, plan)
""",
        "## Retention",
        "ttl = workbook.table_ttl(settings)\nttl",
        """
assert plan["parts_selected"] >= 1, plan
assert plan["parts_selected"] < plan["parts_total"] or len(partition) == 1, plan
assert plan["result_rows"] == warehouse.count_minute(target, settings=settings)
assert f"toIntervalHour({settings.clickhouse_retention_hours})" in ttl, ttl
""",
    ),
    "03_extract.ipynb": notebook(
        "03 · Extract",
        """
The minute's one partition, read with a bound parameter, becomes a pandas DataFrame, then an
Arrow table of an explicit schema derived from the Avro event (UUIDs as text, enums as strings,
`timestamp[ms, UTC]`), then a zstd Parquet object `YYYY-MM-DD_HH-MM.parquet` in the bucket.
Re-running a minute overwrites its object. The object is read back and compared with the rows.
""",
        f"""
{MINUTE}
preview: int = 5  # rows of the minute to show
""",
        """
from etar import charts, extract, warehouse, workbook
from etar.config import get_settings

settings = get_settings()
target = workbook.minute_param(minute)
workbook.positive("preview", preview)
target = target or workbook.demo_minute(settings=settings)
target
""",
        "## The minute as a DataFrame",
        """
frame = workbook.require_rows(
    warehouse.read_minute(target, settings=settings, uuid_as_text=True), target)
print(f"{len(frame)} events in {target}")
frame.head(preview)
""",
        "charts.events_per_type(frame, f\"Events of {target}\")",
        "## Its Arrow schema",
        "extract.ARROW_SCHEMA",
        "## The Parquet object",
        """
name = extract.extract_minute(target, settings)
info, back = workbook.parquet_object(target, settings)
{key: value for key, value in info.items() if key != "schema"}
""",
        "## Read back and compared",
        """
same = workbook.same_events(frame, back)
workbook.record(minute=str(target), rows=len(frame), parquet=name, bytes=info["bytes"],
                row_groups=info["row_groups"], same=same)
same
""",
        """
assert len(frame) > 0, f"minute {target} has no events"
assert name == target.parquet_name
assert info["rows"] == len(frame) == len(back)
assert info["schema"].remove_metadata().equals(extract.ARROW_SCHEMA)
assert same
""",
    ),
    "04_analyze.ipynb": notebook(
        "04 · Analyze",
        """
`etar.analysis.aggregate` is pure PySpark: the Spark job (`spark/spark.py`, submitted by
Airflow's `SparkSubmitOperator`) and this notebook run the same function. Here it runs in an
interactive local SparkSession configured like the job (the S3A conf of
`etar.spark_submit.submit_spec`, credentials only in the environment) on the minute's Parquet
object, and its result is compared field by field with the job's JSON report for the minute
(the job is run first when that JSON is missing or older than the Parquet object).
""",
        MINUTE,
        """
from etar import analysis, charts, workbook
from etar.config import get_settings
from etar.spark_submit import minute_source

settings = get_settings()
given = workbook.minute_param(minute)
target = given or workbook.demo_minute(settings=settings)
parquet = workbook.extracted(target, settings, fresh=given is None)
target, parquet
""",
        "## The aggregation, interactively",
        """
spark = workbook.spark_session(target, settings)
events = spark.read.parquet(minute_source(target, settings))
mine = analysis.aggregate(events, target)
charts.by_event_type(mine, f"{target}: success vs error per event type (notebook)")
""",
        "## The production job's report",
        """
job = workbook.job_report(target, settings)
diff = workbook.compare_reports(mine, job)
workbook.record(minute=str(target), total_events=mine["total_events"],
                total_errors=mine["total_errors"], equal=bool(diff["equal"].all()))
diff
""",
        "spark.stop()",
        """
assert mine["total_events"] > 0
assert diff["equal"].all(), diff[~diff["equal"]]
assert job["source"].endswith(target.parquet_name)
""",
    ),
    "05_report.ipynb": notebook(
        "05 · Report",
        """
The job's JSON report of the minute is read from the bucket, validated as
`etar.report.MinuteReport` (the contract of job, API and UI), POSTed to the dashboard API with
its bearer token, and read back from the API, which the Streamlit UI polls. The chart is the
one the dashboard draws.
""",
        MINUTE,
        """
from etar import charts, report, workbook
from etar.config import get_settings

settings = get_settings()
given = workbook.minute_param(minute)
target = given or workbook.demo_minute(settings=settings)
workbook.extracted(target, settings, fresh=given is None)
target
""",
        "## The JSON",
        """
document = workbook.job_report(target, settings)
report.MinuteReport.model_validate(document)
document
""",
        "## Posted to the dashboard API",
        """
answer = report.post_report(document, settings)
served = workbook.dashboard_report(target, settings)
workbook.record(minute=str(target), report=document)
answer
""",
        "## The dashboard's chart",
        "charts.by_event_type(served or document, f\"{target}: success vs error per event type\")",
        """
assert served is not None, f"the dashboard API has no report for {target}"
assert served["total_events"] == document["total_events"] > 0
assert served["total_errors"] == document["total_errors"]
assert served["by_event_type"] == document["by_event_type"]
""",
    ),
}


if __name__ == "__main__":
    HERE.mkdir(exist_ok=True)
    for name, nb in NOTEBOOKS.items():
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)
        subprocess.run([sys.executable, "-m", "nbstripout", str(HERE / name)], check=True)
        print(HERE / name)
