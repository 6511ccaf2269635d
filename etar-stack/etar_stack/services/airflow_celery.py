"""The Celery worker's configuration: Airflow's defaults plus etar's modules, preloaded.

Each task runs in a process forked from a Celery pool process. Whatever the pool process
imported before the fork is free for the task; whatever the task imports itself is paid again
every minute (pyspark's Connect client, clickhouse-connect, confluent-kafka: seconds on a small
machine). Celery imports the modules named in ``imports`` in the worker's main process before
it forks its pool, so every task starts with them loaded.

``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS`` points here (``etar_stack.services.airflow``).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

PRELOAD = "etar_stack.services.airflow_preload"

CELERY_CONFIG: dict[str, Any] = {**DEFAULT_CELERY_CONFIG, "imports": (PRELOAD,)}
