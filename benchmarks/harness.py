"""What the pipeline benchmarks share: a stack in a Spark mode, a minute's latency split by
stage from what Airflow recorded, percentiles, the sink group's lag."""

from __future__ import annotations

import os
import socket
from datetime import datetime

from confluent_kafka import Consumer, TopicPartition

from etar import topics
from etar.config import Settings
from etar.minute import Minute
from etar.orchestration.airflow_api import PIPELINE_DAG, AirflowApi
from etar_stack import stack

PARTS = ("schedule", "sink", "extract", "spark", "report", "handoff", "total")
"""Where a minute's end → dashboard time goes:

- schedule: minute end → ``wait_for_sink`` starts (run creation, queueing, worker pick-up);
- sink: ``wait_for_sink`` (the sink committing past the minute's cut-off);
- extract / spark / report: those tasks' own durations;
- handoff: the rest (gaps between tasks: scheduler and Celery between one task and the next).
"""


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def split(minute: Minute, run_id: str, latency_s: float, api: AirflowApi) -> dict[str, float]:
    """``latency_s`` (minute end → dashboard) of ``minute``'s run, split into ``PARTS``."""
    tis = api.task_instances(PIPELINE_DAG, run_id)
    seconds = {task: (_at(ti["end_date"]) - _at(ti["start_date"])).total_seconds()
               for task, ti in tis.items() if ti.get("start_date") and ti.get("end_date")}
    parts = {"schedule": (_at(tis["wait_for_sink"]["start_date"]) - minute.end).total_seconds(),
             "sink": seconds["wait_for_sink"], "extract": seconds["extract"],
             "spark": seconds["analyze"], "report": seconds["report"], "total": latency_s}
    parts["handoff"] = parts["total"] - sum(parts[p] for p in PARTS[:5])
    return parts


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank; ``q`` 1.0 is the maximum)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def stack_in_mode(mode: str) -> Settings:
    """Settings in Spark ``mode``, with a stack running in it (restarted when the mode
    differs)."""
    os.environ["ETAR_SPARK_MODE"] = mode  # the supervisor and Airflow read the environment
    settings = Settings()
    native = stack(settings)
    with socket.socket() as probe:
        connect_up = probe.connect_ex(("127.0.0.1", settings.spark_connect_port)) == 0
    if native.read_state() is not None and connect_up == (mode == "connect"):
        return settings
    print(f"starting the native stack in {mode} mode…", flush=True)
    native.down()
    native.up_detached()
    return settings


def group_lag(settings: Settings, consumer: Consumer, partitions: int | None = None) -> int:
    """Messages on ``settings``' event topic past the sink group's committed offsets
    (``consumer`` is in that group and never joins it)."""
    count = settings.kafka_topic_partitions if partitions is None else partitions
    committed = consumer.committed(
        [TopicPartition(settings.kafka_topic, p) for p in range(count)], timeout=10)
    lag = 0
    for tp in committed:
        _, high = topics.watermarks(consumer, tp.topic, tp.partition)
        lag += high - max(tp.offset, 0)
    return lag
