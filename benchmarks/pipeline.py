"""End to end under Airflow: minute end → report on the dashboard, and where the time goes.

Produces N consecutive minutes at a fixed rate (``etar demo``'s loop: each minute's events
stamped inside it), lets the scheduler run ``etar_pipeline`` on the Celery worker, and splits
each minute's latency from the task instances Airflow recorded:

- schedule: minute end → ``wait_for_sink`` starts (run creation, queueing, worker pick-up);
- sink: ``wait_for_sink`` (the sink committing past the minute's cut-off);
- extract / spark / report: those tasks' own durations;
- handoff: the rest (gaps between tasks: scheduler and Celery between one task and the next).

Runs against the running native stack (``etar stack up --detach``); the topic must be quiet
(stop ``etar up``'s producer). Prints a p50/p95 table and writes
``benchmarks/results/pipeline.json``.

    uv run python benchmarks/pipeline.py [--minutes 5] [--rate 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any

from etar.airflow_api import PIPELINE_DAG, AirflowApi
from etar.config import get_settings
from etar.demo import MinuteCheck, run_demo

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=5)
    parser.add_argument("--rate", type=float, default=300.0)
    args = parser.parse_args()
    settings = get_settings()
    checks = run_demo(args.minutes, args.rate, settings)
    bad = [c for c in checks if not c.ok]
    if bad:
        raise SystemExit(f"minutes did not check out: {bad}")
    with AirflowApi(settings) as api:
        splits = [_split(check, api) for check in checks]
    rows: list[dict[str, Any]] = []
    print(f"{'minute (UTC)':<20}{'events':>8}" + "".join(f"{p:>10}" for p in PARTS))
    for check, split in zip(checks, splits, strict=True):
        rows.append({"minute": str(check.minute), "events": check.produced, **split})
        print(f"{check.minute!s:<20}{check.produced:>8}"
              + "".join(f"{split[p]:>10.2f}" for p in PARTS))
    summary = {f"{stat}_{p}": _percentile([s[p] for s in splits], q)
               for stat, q in (("p50", 0.5), ("p95", 0.95)) for p in PARTS}
    for stat in ("p50", "p95"):
        print(f"{stat:<28}" + "".join(f"{summary[f'{stat}_{p}']:>10.2f}" for p in PARTS))
    print(f"mean total {statistics.mean(s['total'] for s in splits):.2f} s; the budget is "
          f"60 s (a minute must be done before the next one ends)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "pipeline.json"
    out.write_text(json.dumps({"rate": args.rate, "minutes": rows, "summary": summary},
                              indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
