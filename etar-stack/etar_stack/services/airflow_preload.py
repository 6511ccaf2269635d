"""Imported once by the Celery worker before it forks (see ``airflow_celery``): what the
etar DAGs and their tasks import, so no task pays for it. Nothing here opens a connection
or starts a thread: the pool processes are forked after it."""

from __future__ import annotations

import importlib

MODULES = (
    "airflow.sdk",
    "airflow.sdk.execution_time.supervisor",  # every task runs under it
    "airflow.sdk.execution_time.task_runner",
    "airflow.providers.apache.spark.operators.spark_submit",  # the DAG file
    "pendulum",
    "pyspark.sql.connect.session",  # analyze: the Spark Connect client
    "etar.orchestration.completeness",  # wait_for_sink
    "etar.extract.parquet",
    "etar.analysis.remote",
    "etar.report.minute_report",
    "etar.orchestration.reconcile",  # reconcile
)

for _name in MODULES:
    importlib.import_module(_name)
