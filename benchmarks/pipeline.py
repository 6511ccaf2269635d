"""End to end under Airflow: minute end → report on the dashboard, and where the time goes.

Produces N consecutive minutes at a fixed rate (``etar demo``'s loop: each minute's events
stamped inside it), lets the scheduler run ``etar_pipeline`` on the Celery worker, and splits
each minute's latency from the task instances Airflow recorded (``harness.PARTS``: schedule,
sink, extract, spark, report, handoff).

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
import statistics
from pathlib import Path
from typing import Any

from harness import PARTS, percentile, split, stack_in_mode

from etar.demo import MinuteCheck, run_demo
from etar.orchestration.airflow_api import AirflowApi

RESULTS = Path(__file__).parent / "results"


def _split(check: MinuteCheck, api: AirflowApi) -> dict[str, float]:
    assert check.run_id is not None and check.latency_s is not None, check
    return split(check.minute, check.run_id, check.latency_s, api)


def _measure(mode: str, minutes: int, rate: float) -> tuple[list[dict[str, Any]], dict[str, float]]:
    settings = stack_in_mode(mode)
    checks = run_demo(minutes, rate, settings)
    bad = [c for c in checks if not c.ok]
    if bad:
        raise SystemExit(f"{mode}: minutes did not check out: {bad}")
    with AirflowApi(settings) as api:
        splits = [_split(check, api) for check in checks]
    print(f"\n{mode} mode\n{'minute (UTC)':<20}{'events':>8}" + "".join(f"{p:>10}" for p in PARTS))
    rows = []
    for check, parts in zip(checks, splits, strict=True):
        rows.append({"minute": str(check.minute), "events": check.produced, **parts})
        print(f"{check.minute!s:<20}{check.produced:>8}"
              + "".join(f"{parts[p]:>10.2f}" for p in PARTS))
    summary = {f"{stat}_{p}": (max(s[p] for s in splits) if q == 1.0
                               else percentile([s[p] for s in splits], q))
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
        stack_in_mode("connect")  # leave the stack as etar runs it by default
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "pipeline.json"
    out.write_text(json.dumps({"rate": args.rate, "modes": {
        mode: {"minutes": rows, "summary": summary}
        for mode, (rows, summary) in results.items()}}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
