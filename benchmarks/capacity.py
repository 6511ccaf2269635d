"""Capacity: the whole pipeline under sustained load, level by level, and what each stage costs.

The native stack with Airflow (Spark in ``connect`` mode, as ``make up`` runs it) takes the
producer at rising sustained rates (``--levels``, events/s), each for ``--minutes`` minutes,
after ``--rest-minutes`` at 50 events/s (the stack at rest). Each minute gets a producer run of
its own, started early and held back until the minute starts (``etar produce --start-at``), so
its events are stamped as they are sent, all inside that minute, and its delivered count is
the minute's exact number of events. Per minute:

- reconciled: produced = ClickHouse ``FINAL`` = the report on the dashboard;
- minute end → dashboard latency split by stage from Airflow's task instances
  (``harness.PARTS``), the first minute of every level included;
- event → queryable p50 / p95 (``ingested_at - event_ts``: ClickHouse stamps the insert).

Sampled every 2 s: the sink group's lag, and the CPU seconds and RSS of each service's process
tree (``/proc`` through psutil; a service's tree includes its reaped children, e.g. Celery's
task processes or ``spark-submit``), and of the producer runs. From them, per level: CPU
seconds per minute by service and events per CPU-second for the whole machine's work.

A level stops early once the pipeline falls behind (a report more than 60 s after its minute
ended, or the sink's lag larger at three minute ends in a row), and the levels above it are
skipped; its minutes are still waited for (``--settle``) and reconciled. ``--submit-level``
then runs one level with ``ETAR_SPARK_MODE=submit`` (a restart of the stack) for comparison.

The topic must be quiet (stop ``make up``'s producer first). Prints a table per level, writes
``benchmarks/results/capacity.json`` and three plots beside it (``capacity_latency.png``,
``capacity_cpu.png``, ``capacity_lag.png``). The rest level also records each service's RSS and
PSS.

    uv run python benchmarks/capacity.py [--levels 1000,5000,20000,50000,100000] [--minutes 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from harness import PARTS, group_lag, percentile, split, stack_in_mode

from etar import topics
from etar.config import Settings
from etar.demo import ReportWatcher
from etar.minute import Minute
from etar.orchestration.airflow_api import PIPELINE_DAG, AirflowApi
from etar.warehouse import table as warehouse
from etar_stack import stack

RESULTS = Path(__file__).parent / "results"
LEAD_S = 8.0
"""A minute's producer starts this long before the minute (imports, registry, workers)."""
MARGIN_S = 1.0
"""It stops sending this long before the minute ends: every event stamped inside it."""
LATE_REPORT_S = 60.0
SAMPLE_EVERY_S = 2.0
REST_RATE = 50.0
MIN_FREE_DISK = 8 * 2**30
"""A level stops once less disk than this is left: at 100k events/s the stack stores about
2 GB a minute, and a full disk stops the broker."""


@dataclass
class MinuteResult:
    """One produced minute across every stage; ``None`` where a stage has nothing (yet)."""

    minute: str
    rate: float
    produced: int = 0
    failed: int = 0
    clickhouse: int | None = None
    dashboard: int | None = None
    latency_s: float | None = None
    dag_state: str | None = None
    stages: dict[str, float] = field(default_factory=dict)
    queryable_p50_ms: float | None = None
    queryable_p95_ms: float | None = None

    @property
    def reconciled(self) -> bool:
        return self.produced > 0 and self.produced == self.clickhouse == self.dashboard


def _tree(pid: int) -> list[psutil.Process]:
    """``pid`` and its descendants (empty once it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _tree_usage(pid: int) -> tuple[float, int]:
    """CPU seconds (its reaped children included) and RSS bytes of ``pid``'s process tree."""
    cpu, rss = 0.0, 0
    for process in _tree(pid):
        try:
            with process.oneshot():
                times, memory = process.cpu_times(), process.memory_info()
        except psutil.Error:
            continue  # ended between the listing and the reading
        cpu += times.user + times.system + times.children_user + times.children_system
        rss += memory.rss
    return cpu, rss


def memory_at_rest(services: dict[str, int]) -> dict[str, Any]:
    """RSS and PSS (shared pages divided among the processes that map them, so a forked
    worker's or Postgres' shared memory counts once) of each service's tree, in MiB."""
    rows: dict[str, dict[str, int]] = {}
    for name, pid in services.items():
        rss = pss = 0
        for process in _tree(pid):
            try:
                info = process.memory_full_info()
            except psutil.Error:
                continue
            rss, pss = rss + info.rss, pss + info.pss
        rows[name] = {"rss_mib": round(rss / 2**20), "pss_mib": round(pss / 2**20)}
    return {"services": rows,
            "total_rss_mib": sum(r["rss_mib"] for r in rows.values()),
            "total_pss_mib": sum(r["pss_mib"] for r in rows.values())}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Sampler(threading.Thread):
    """Every ``SAMPLE_EVERY_S``: each service's CPU and RSS, the producers', the sink's lag.

    The producer runs are this process's children: their CPU is what ``RUSAGE_CHILDREN``
    gained once they are reaped, plus the live ones' trees.
    """

    def __init__(self, settings: Settings, services: dict[str, int]) -> None:
        super().__init__(daemon=True, name="sampler")
        self.settings, self.services = settings, services
        self.producers: set[int] = set()
        self.samples: list[dict[str, Any]] = []
        self._halt = threading.Event()
        self._consumer = topics.consumer(settings, settings.sink_group_id)
        self._lock = threading.Lock()

    def sample(self) -> dict[str, Any]:
        cpu: dict[str, float] = {}
        rss: dict[str, int] = {}
        for name, pid in self.services.items():
            cpu[name], rss[name] = _tree_usage(pid)
        with self._lock:
            live = list(self.producers)
        usage = [_tree_usage(pid) for pid in live]
        cpu["producer"] = _children_cpu() + sum(u[0] for u in usage)
        rss["producer"] = sum(u[1] for u in usage)
        return {"t": time.time(), "cpu": cpu, "rss": rss,
                "lag": group_lag(self.settings, self._consumer)}

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.samples.append(self.sample())
            except Exception as exc:  # a missed sample must not end the benchmark
                print(f"  (sample failed: {exc})", flush=True)
            self._halt.wait(SAMPLE_EVERY_S)

    def add_producer(self, pid: int) -> None:
        with self._lock:
            self.producers.add(pid)

    def drop_producer(self, pid: int) -> None:
        with self._lock:
            self.producers.discard(pid)

    def at(self, instant: float) -> dict[str, Any]:
        """The sample nearest ``instant``."""
        return min(self.samples, key=lambda s: abs(s["t"] - instant))

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        return [s for s in self.samples if start <= s["t"] <= end]

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        self._consumer.close()


@dataclass
class ProducerRun:
    minute: Minute
    process: subprocess.Popen[str]


def _start_producer(minute: Minute, rate: float, processes: int, log: Path) -> ProducerRun:
    """``etar produce`` for ``minute``: held back until it starts, stopped ``MARGIN_S`` before
    its end."""
    env = {**os.environ, "ETAR_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "etar", "produce", "--rate", str(rate),
               "--processes", str(processes), "--duration", str(60.0 - MARGIN_S),
               "--start-at", minute.start.isoformat()]
    with log.open("a") as err:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True,
                                   env=env)
    return ProducerRun(minute, process)


def _finish_producer(run: ProducerRun, result: MinuteResult) -> None:
    out, _ = run.process.communicate(timeout=180)
    summary = dict(item.split("=", 1) for item in out.split() if "=" in item)
    if run.process.returncode not in (0, 2) or "delivered" not in summary:
        raise SystemExit(f"the producer of {run.minute} failed (exit "
                         f"{run.process.returncode}); see benchmarks/results/capacity.log")
    result.produced, result.failed = int(summary["delivered"]), int(summary["failed"])


def _sleep_until(instant: float) -> None:
    time.sleep(max(0.0, instant - time.time()))


def _processes_for(rate: float) -> int:
    """Producer processes for ``rate``: one up to 5k events/s, else two (one per core)."""
    return 1 if rate <= 5_000 else 2


@dataclass
class Level:
    """One sustained rate: its minutes, why it stopped early (if it did), what it cost."""

    rate: float
    processes: int
    mode: str
    minutes: list[MinuteResult] = field(default_factory=list)
    behind: str | None = None
    window: tuple[float, float] = (0.0, 0.0)
    summary: dict[str, Any] = field(default_factory=dict)
    lag: list[tuple[float, int]] = field(default_factory=list)

    @property
    def minutes_json(self) -> list[dict[str, Any]]:
        return [{**asdict(r), "reconciled": r.reconciled} for r in self.minutes]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Level:
        level = cls(data["rate"], data["processes"], data["spark_mode"], behind=data["behind"],
                    summary=data["summary"], lag=[tuple(p) for p in data["lag"]])
        fields = MinuteResult.__dataclass_fields__
        level.minutes = [MinuteResult(**{k: v for k, v in m.items() if k in fields})
                         for m in data["minutes"]]
        return level


def _behind(level: Level, watcher: ReportWatcher, lags: list[int], now: float) -> str | None:
    """Why the pipeline no longer keeps up with ``level`` (or the disk is nearly full), or
    None."""
    free = shutil.disk_usage(RESULTS).free
    if free < MIN_FREE_DISK:
        return f"{free / 2**30:.1f} GiB of disk left (Kafka, ClickHouse and S3 keep every event)"
    for result in level.minutes:
        minute = Minute.parse(result.minute, closed=False)
        if minute.end.timestamp() + LATE_REPORT_S < now and minute.start not in watcher.seen:
            return f"no report of {minute} {LATE_REPORT_S:.0f} s after it ended"
    if len(lags) >= 4 and lags[-1] > lags[-2] > lags[-3] > lags[-4] and lags[-1] > level.rate:
        return f"the sink's lag grew at three minute ends in a row (to {lags[-1]:,})"
    return None


def run_level(level: Level, minutes: int, settings: Settings, watcher: ReportWatcher,
              sampler: Sampler, log: Path) -> None:
    """Produce ``minutes`` minutes at ``level.rate``; stop early once the pipeline is behind."""
    first = Minute.containing(datetime.now(UTC)).next
    if first.start.timestamp() - time.time() < LEAD_S:
        first = first.next
    runs: list[tuple[ProducerRun, MinuteResult]] = []
    lags: list[int] = []
    minute = first
    print(f"\n{level.rate:,.0f} events/s ({level.processes} producer processes, Spark "
          f"{level.mode}) from {first}", flush=True)
    for index in range(minutes):
        _sleep_until(minute.start.timestamp() - LEAD_S)
        if index > 0:
            lags.append(sampler.at(minute.start.timestamp() - LEAD_S)["lag"])
            level.behind = _behind(level, watcher, lags, time.time())
            if level.behind:
                print(f"  behind: {level.behind}; stopping this level", flush=True)
                break
        result = MinuteResult(str(minute), level.rate)
        run = _start_producer(minute, level.rate, level.processes, log)
        sampler.add_producer(run.process.pid)
        runs.append((run, result))
        level.minutes.append(result)
        for done, done_result in [r for r in runs if r[0].process.poll() is not None]:
            _collect(done, done_result, sampler)
            runs.remove((done, done_result))
        minute = minute.next
    for run, result in runs:
        _collect(run, result, sampler)
    level.window = (first.start.timestamp(), 0.0)


def _collect(run: ProducerRun, result: MinuteResult, sampler: Sampler) -> None:
    _finish_producer(run, result)
    sampler.drop_producer(run.process.pid)
    print(f"  {result.minute}: produced {result.produced:,}"
          + (f" ({result.failed} failed)" if result.failed else ""), flush=True)


def settle(level: Level, settings: Settings, watcher: ReportWatcher, api: AirflowApi,
           wait_s: float) -> None:
    """Wait until every minute of ``level`` is reconciled (or ``wait_s`` passed), then read
    what each stage recorded."""
    deadline = time.monotonic() + wait_s
    pending = list(level.minutes)
    while pending and time.monotonic() < deadline:
        for result in list(pending):
            minute = Minute.parse(result.minute, closed=False)
            seen = watcher.seen.get(minute.start)
            if seen is not None and seen[1] == result.produced:
                pending.remove(result)
        time.sleep(1)
    ch = warehouse.client(settings)
    for result in level.minutes:
        minute = Minute.parse(result.minute, closed=False)
        result.clickhouse = warehouse.count_minute(minute, ch, settings)
        row = ch.query(
            "SELECT quantiles(0.5, 0.95)(dateDiff('millisecond', event_ts, ingested_at)) "
            f"FROM {settings.clickhouse_table} WHERE event_minute = {{m:DateTime}}",
            parameters={"m": minute.start.replace(tzinfo=None)}).result_rows[0][0]
        result.queryable_p50_ms, result.queryable_p95_ms = (row[0], row[1]) if row else (
            None, None)
        seen = watcher.seen.get(minute.start)
        if seen is not None:
            result.dashboard = seen[1]
            result.latency_s = (seen[0] - minute.end).total_seconds()
        run = api.run_of_minute(minute)
        if run is not None:
            result.dag_state = run["state"]
            if run["state"] == "success" and result.latency_s is not None:
                result.stages = split(minute, run["dag_run_id"], result.latency_s, api)
    seen_at = [watcher.seen[Minute.parse(r.minute, closed=False).start][0].timestamp()
               for r in level.minutes if Minute.parse(r.minute, closed=False).start
               in watcher.seen]
    level.window = (level.window[0], max(seen_at, default=time.time()))


def summarize(level: Level, sampler: Sampler) -> None:
    """Latency percentiles, CPU per minute by service, peak RSS, lag over time."""
    start, end = level.window
    first, last = sampler.at(start), sampler.at(end)
    span_min = max((last["t"] - first["t"]) / 60.0, 1e-9)
    cpu = {name: max(0.0, last["cpu"][name] - first["cpu"].get(name, 0.0))
           for name in last["cpu"]}
    window = sampler.between(start, end) or [first, last]
    events = sum(r.produced for r in level.minutes)
    latencies = [r.latency_s for r in level.minutes if r.latency_s is not None]
    staged = [r.stages for r in level.minutes if r.stages]
    level.lag = [(round(s["t"] - start, 1), s["lag"]) for s in window]
    level.summary = {
        "minutes": len(level.minutes),
        "reconciled": sum(r.reconciled for r in level.minutes),
        "events": events,
        "events_per_minute": events / max(len(level.minutes), 1),
        "latency_p50_s": percentile(latencies, 0.5) if latencies else None,
        "latency_p95_s": percentile(latencies, 0.95) if latencies else None,
        "latency_max_s": max(latencies, default=None),
        "stages_p50_s": {p: percentile([s[p] for s in staged], 0.5) for p in PARTS}
        if staged else {},
        "stages_p95_s": {p: percentile([s[p] for s in staged], 0.95) for p in PARTS}
        if staged else {},
        "queryable_p50_ms": percentile([r.queryable_p50_ms for r in level.minutes
                                        if r.queryable_p50_ms is not None], 0.5)
        if events else None,
        "queryable_p95_ms": max((r.queryable_p95_ms for r in level.minutes
                                 if r.queryable_p95_ms is not None), default=None),
        "lag_max": max((s["lag"] for s in window), default=0),
        "cpu_s_per_minute": {name: round(value / span_min, 2) for name, value in cpu.items()},
        "cpu_s_per_minute_total": round(sum(cpu.values()) / span_min, 2),
        "events_per_cpu_s": round(events / max(sum(cpu.values()), 1e-9), 1),
        "rss_peak_mib": {name: round(max(s["rss"].get(name, 0) for s in window) / 2**20)
                         for name in last["rss"]},
        "rss_peak_total_mib": round(max(sum(s["rss"].values()) for s in window) / 2**20),
        "window_s": round(end - start, 1),
    }


def _print_level(level: Level) -> None:
    header = f"{'minute (UTC)':<18}{'events':>11}{'CH':>11}{'dash':>11}{'q95 ms':>8}"
    print("\n" + header + "".join(f"{p:>9}" for p in PARTS))
    for r in level.minutes:
        print(f"{r.minute:<18}{r.produced:>11,}{r.clickhouse or 0:>11,}{r.dashboard or 0:>11,}"
              f"{r.queryable_p95_ms or 0:>8.0f}"
              + "".join(f"{r.stages.get(p, float('nan')):>9.2f}" for p in PARTS)
              + ("" if r.reconciled else "  NOT RECONCILED"))
    s = level.summary
    print(f"  reconciled {s['reconciled']}/{s['minutes']}; minute end → dashboard p50 "
          f"{s['latency_p50_s']} s, p95 {s['latency_p95_s']} s, max {s['latency_max_s']} s; "
          f"event → queryable p95 {s['queryable_p95_ms']} ms; lag max {s['lag_max']:,}")
    top = sorted(s["cpu_s_per_minute"].items(), key=lambda kv: -kv[1])[:6]
    print(f"  CPU s/min {s['cpu_s_per_minute_total']} ("
          + ", ".join(f"{k} {v}" for k, v in top) + f"); events per CPU-s "
          f"{s['events_per_cpu_s']:,}; RSS peak {s['rss_peak_total_mib']:,} MiB")
    if level.behind:
        print(f"  stopped early: {level.behind}")
    if "memory_at_rest" in s:
        rest = s["memory_at_rest"]
        print(f"  at rest: RSS {rest['total_rss_mib']:,} MiB, PSS {rest['total_pss_mib']:,} MiB "
              "(" + ", ".join(f"{k} {v['pss_mib']}" for k, v in sorted(
                  rest["services"].items(), key=lambda kv: -kv[1]["pss_mib"])) + ")")


def measure(levels: list[tuple[float, int]], minutes: int, mode: str, settle_s: float,
            log: Path) -> list[Level]:
    """Run ``levels`` (rate, minutes) on a stack in Spark ``mode``, lowest first."""
    settings = stack_in_mode(mode)
    state = stack(settings).read_state()
    if state is None:
        raise SystemExit("the native stack is not running")
    sampler = Sampler(settings, dict(state["services"]))
    sampler.start()
    watcher = ReportWatcher(settings, every=0.2)  # when a report shows, to within 0.2 s
    watcher.start()
    done: list[Level] = []
    try:
        with AirflowApi(settings) as api:
            api.set_paused(PIPELINE_DAG, False)
            for rate, level_minutes in levels:
                level = Level(rate, _processes_for(rate), mode)
                run_level(level, level_minutes or minutes, settings, watcher, sampler, log)
                settle(level, settings, watcher, api,
                       settle_s if level.behind else max(180.0, settle_s / 3))
                summarize(level, sampler)
                if rate == REST_RATE:
                    level.summary["memory_at_rest"] = memory_at_rest(sampler.services)
                _print_level(level)
                done.append(level)
                if level.behind:
                    break
    finally:
        watcher.stop()
        sampler.stop()
    return done


def plot(levels: list[Level], out: Path, stem: str = "capacity") -> list[Path]:
    """Report latency by stage, CPU share by service, lag over time at the highest level
    held."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = [lv for lv in levels if lv.summary.get("stages_p50_s") and lv.rate > REST_RATE]
    labels = [f"{lv.rate / 1000:g}k/s\n{lv.summary['events_per_minute'] / 1e6:.2f}M/min"
              for lv in loads]
    paths = []

    fig, ax = plt.subplots(figsize=(8, 4.5))
    bottom = [0.0] * len(loads)
    for part in PARTS[:-1]:
        values = [max(0.0, lv.summary["stages_p50_s"][part]) for lv in loads]
        ax.bar(labels, values, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.plot(labels, [lv.summary["latency_p95_s"] for lv in loads], "k^", label="p95 total")
    ax.set_ylabel("minute end → dashboard, s (median by stage)")
    ax.set_xlabel("sustained rate (events per minute)")
    ax.legend(fontsize=8, ncol=2)
    ax.set_title("Report latency by stage")
    fig.tight_layout()
    paths.append(out / f"{stem}_latency.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    totals = [lv.summary["cpu_s_per_minute_total"] for lv in loads]
    names = sorted({n for lv in loads for n in lv.summary["cpu_s_per_minute"]},
                   key=lambda n: -sum(lv.summary["cpu_s_per_minute"].get(n, 0) for lv in loads))
    shown, rest = names[:8], names[8:]
    bottom = [0.0] * len(loads)
    for name in [*shown, "other"]:
        values = [100 * (sum(lv.summary["cpu_s_per_minute"].get(n, 0) for n in rest)
                         if name == "other" else lv.summary["cpu_s_per_minute"].get(name, 0))
                  / max(total, 1e-9) for lv, total in zip(loads, totals, strict=True)]
        ax.bar(labels, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for i, total in enumerate(totals):
        ax.text(i, 101, f"{total / 60:.2f} cores", ha="center", fontsize=8)
    ax.set_ylim(0, 110)
    ax.set_ylabel("share of the stack's CPU, %")
    ax.set_xlabel("sustained rate (events per minute)")
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    ax.set_title("CPU by service")
    fig.tight_layout()
    paths.append(out / f"{stem}_cpu.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    held = [lv for lv in loads if not lv.behind] or loads
    top = held[-1]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([t for t, _ in top.lag], [lag for _, lag in top.lag])
    ax.set_xlabel("seconds since the level started")
    ax.set_ylabel("sink lag, messages")
    ax.set_title(f"Sink lag at {top.rate:,.0f} events/s (the highest level held)")
    fig.tight_layout()
    paths.append(out / f"{stem}_lag.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares ``y = a + b x`` through ``points``: (a, b)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    b = sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var else 0.0
    return mean_y - b * mean_x, b


def cost_model(levels: list[Level]) -> dict[str, Any]:
    """What each service costs per minute at rest (the fit's intercept) and per million events
    a minute (its slope), and each batch stage's seconds per million rows, fitted over every
    level whose minutes were all reconciled (the rest level included)."""
    fitted = [lv for lv in levels if lv.summary.get("reconciled") == lv.summary.get("minutes")]
    if len(fitted) < 2:
        return {}
    services = sorted({n for lv in fitted for n in lv.summary["cpu_s_per_minute"]})
    cpu = {}
    for name in services:
        a, b = _fit([(lv.summary["events_per_minute"] / 1e6,
                      lv.summary["cpu_s_per_minute"].get(name, 0.0)) for lv in fitted])
        cpu[name] = {"cpu_s_per_minute_at_rest": round(a, 2),
                     "cpu_s_per_million_events": round(b, 2)}
    stages = {}
    minutes = [m for lv in fitted for m in lv.minutes_json if m["stages"]]
    for part in ("sink", "extract", "spark", "report"):
        a, b = _fit([(m["produced"] / 1e6, m["stages"][part]) for m in minutes])
        stages[part] = {"seconds_fixed": round(a, 2), "seconds_per_million_rows": round(b, 2)}
    total = _fit([(lv.summary["events_per_minute"] / 1e6, lv.summary["cpu_s_per_minute_total"])
                  for lv in fitted])
    return {"levels_fitted": [lv.rate for lv in fitted], "cpu": cpu, "stages": stages,
            "total_cpu_s_per_minute_at_rest": round(total[0], 2),
            "total_cpu_s_per_million_events": round(total[1], 2)}


def _as_json(level: Level) -> dict[str, Any]:
    return {"rate": level.rate, "processes": level.processes, "spark_mode": level.mode,
            "behind": level.behind, "summary": level.summary,
            "minutes": level.minutes_json,
            "lag": level.lag}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1000,5000,20000,50000,100000",
                        help="sustained rates, events/s, lowest first")
    parser.add_argument("--minutes", type=int, default=5, help="minutes per level")
    parser.add_argument("--rest-minutes", type=int, default=2,
                        help=f"minutes at {REST_RATE:g} events/s first (0: none)")
    parser.add_argument("--submit-level", type=float, default=5000,
                        help="rate measured again with ETAR_SPARK_MODE=submit (0: none)")
    parser.add_argument("--submit-minutes", type=int, default=3)
    parser.add_argument("--no-restore", action="store_true",
                        help="leave the stack in submit mode after --submit-level")
    parser.add_argument("--out", default="capacity",
                        help="results under benchmarks/results/OUT.json (plots OUT_*.png)")
    parser.add_argument("--replot", action="store_true",
                        help="no run: the cost model and plots again from OUT.json")
    parser.add_argument("--settle", type=float, default=600.0,
                        help="seconds to wait for a level that fell behind to be reported")
    args = parser.parse_args()
    rates = [float(r) for r in args.levels.split(",") if r.strip()]
    if not rates or rates != sorted(rates) or min(rates) <= 0:
        raise SystemExit(f"--levels wants rising rates > 0, got {args.levels!r}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{args.out}.json"
    if args.replot:
        results = json.loads(out.read_text())
        loaded = [Level.from_json(lv) for lv in results["levels"]]
        results["cost_model"] = cost_model(loaded)
        out.write_text(json.dumps(results, indent=1))
        print(json.dumps(results["cost_model"], indent=1))
        print("wrote", out, *plot(loaded, RESULTS, args.out))
        return
    log = RESULTS / "capacity.log"
    plan = ([(REST_RATE, args.rest_minutes)] if args.rest_minutes else []) + [
        (rate, args.minutes) for rate in rates]
    levels = measure(plan, args.minutes, "connect", args.settle, log)
    submit: list[Level] = []
    if args.submit_level:
        submit = measure([(args.submit_level, args.submit_minutes)], args.submit_minutes,
                         "submit", args.settle, log)
        if not args.no_restore:
            stack_in_mode("connect")  # leave the stack as etar runs it by default
    held = [lv for lv in levels if not lv.behind and lv.rate > REST_RATE
            and lv.summary["reconciled"] == lv.summary["minutes"]]
    print(f"\n{'rate ev/s':>10}{'ev/min':>11}{'ok':>6}{'p50 s':>8}{'p95 s':>8}{'max s':>8}"
          f"{'q95 ms':>9}{'cores':>7}{'ev/CPU-s':>10}{'RSS MiB':>9}  mode")
    for lv in [*levels, *submit]:
        s = lv.summary
        print(f"{lv.rate:>10,.0f}{s['events_per_minute']:>11,.0f}"
              f"{s['reconciled']:>3}/{s['minutes']:<2}{s['latency_p50_s'] or math.nan:>8.2f}"
              f"{s['latency_p95_s'] or math.nan:>8.2f}{s['latency_max_s'] or math.nan:>8.2f}"
              f"{s['queryable_p95_ms'] or math.nan:>9.0f}"
              f"{s['cpu_s_per_minute_total'] / 60:>7.2f}{s['events_per_cpu_s']:>10,.0f}"
              f"{s['rss_peak_total_mib']:>9,}  {lv.mode}" + ("  (behind)" if lv.behind else ""))
    print(f"highest level held: {held[-1].rate:,.0f} events/s" if held else
          "no level was held")
    out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "memory_gib": round(
            psutil.virtual_memory().total / 2**30, 1)},
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "levels": [_as_json(lv) for lv in levels],
        "submit": [_as_json(lv) for lv in submit],
        "highest_held": held[-1].rate if held else None,
        "cost_model": cost_model(levels)}, indent=1))
    paths = plot(levels, RESULTS, args.out)
    print(f"wrote {out}, " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
