"""End to end under Airflow: minute end → report on the dashboard, and where the time goes.

Produces N consecutive minutes at a fixed rate (``etar demo``'s loop: each minute's events
stamped inside it), lets the scheduler run ``etar_pipeline`` on the Celery worker, and splits
each minute's latency from the task instances Airflow recorded:

- schedule: minute end → ``wait_for_sink`` starts (run creation, queueing, worker pick-up);
- sink: ``wait_for_sink`` (the sink committing past the minute's cut-off);
- extract / spark / report: those tasks' own durations;
- handoff: the rest (gaps between tasks: scheduler and Celery between one task and the next).

Each Spark mode (``--modes connect,submit``) gets a native stack of its own: the running one is
reused when it is in that mode, else restarted with ``ETAR_SPARK_MODE`` set (submit runs
``spark-submit`` per minute, the baseline; connect uses the warm server). The topic must be
quiet (stop ``etar up``'s producer). Prints a table per mode, p50/p95/max per part and the
submit/connect ratio, and writes ``benchmarks/results/pipeline.json``.

    uv run python benchmarks/pipeline.py [--minutes 10] [--rate 300] [--modes connect,submit]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any

from etar.config import Settings
from etar.demo import MinuteCheck, run_demo
from etar.orchestration.airflow_api import PIPELINE_DAG, AirflowApi
from etar_stack import stack

RESULTS = Path(__file__).parent / "results"
PARTS = ("schedule", "sink", "extract", "spark", "report", "handoff", "total")


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _split(check: MinuteCheck, api: AirflowApi) -> dict[str, float]:
    assert check.run_id is not None and check.latency_s is not None, check
    tis = api.task_instances(PIPELINE_DAG, check.run_id)
    seconds = {task: (_at(ti["end_date"]) - _at(ti["start_date"])).total_seconds()
               for task, ti in tis.items()}
    split = {"schedule": (_at(tis["wait_for_sink"]["start_date"])
                          - check.minute.end).total_seconds(),
             "sink": seconds["wait_for_sink"], "extract": seconds["extract"],
             "spark": seconds["analyze"], "report": seconds["report"],
             "total": check.latency_s}
    split["handoff"] = split["total"] - sum(split[p] for p in PARTS[:5])
    return split


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _stack_for(mode: str) -> Settings:
    """Settings in ``mode``, with a stack running in it (restarted when the mode differs)."""
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


def _measure(mode: str, minutes: int, rate: float) -> tuple[list[dict[str, Any]], dict[str, float]]:
    settings = _stack_for(mode)
    checks = run_demo(minutes, rate, settings)
    bad = [c for c in checks if not c.ok]
    if bad:
        raise SystemExit(f"{mode}: minutes did not check out: {bad}")
    with AirflowApi(settings) as api:
        splits = [_split(check, api) for check in checks]
    print(f"\n{mode} mode\n{'minute (UTC)':<20}{'events':>8}" + "".join(f"{p:>10}" for p in PARTS))
    rows = []
    for check, split in zip(checks, splits, strict=True):
        rows.append({"minute": str(check.minute), "events": check.produced, **split})
        print(f"{check.minute!s:<20}{check.produced:>8}"
              + "".join(f"{split[p]:>10.2f}" for p in PARTS))
    summary = {f"{stat}_{p}": (max(s[p] for s in splits) if q == 1.0
                               else _percentile([s[p] for s in splits], q))
               for stat, q in (("p50", 0.5), ("p95", 0.95), ("max", 1.0)) for p in PARTS}
    for stat in ("p50", "p95", "max"):
        print(f"{stat:<28}" + "".join(f"{summary[f'{stat}_{p}']:>10.2f}" for p in PARTS))
    print(f"mean total {statistics.mean(s['total'] for s in splits):.2f} s")
    return rows, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--modes", default="connect,submit",
                        help="Spark modes to measure, in order (connect, submit)")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(modes) <= {"connect", "submit"}:
        raise SystemExit(f"--modes takes connect and/or submit, not {args.modes!r}")
    results = {mode: _measure(mode, args.minutes, args.rate) for mode in modes}
    print(f"\n{'mode':<10}{'p50 s':>8}{'p95 s':>8}{'max s':>8}   (minute end -> report; "
          "budget 60 s)")
    for mode, (_, summary) in results.items():
        print(f"{mode:<10}{summary['p50_total']:>8.2f}{summary['p95_total']:>8.2f}"
              f"{summary['max_total']:>8.2f}")
    if {"connect", "submit"} <= results.keys():
        ratio = results["submit"][1]["p50_total"] / results["connect"][1]["p50_total"]
        print(f"submit / connect, p50: {ratio:.2f}x")
    if modes[-1] != "connect" and "connect" in modes:
        _stack_for("connect")  # leave the stack as etar runs it by default
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "pipeline.json"
    out.write_text(json.dumps({"rate": args.rate, "modes": {
        mode: {"minutes": rows, "summary": summary}
        for mode, (rows, summary) in results.items()}}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
