"""Producer options, pacing and accounting: validation and how work is split."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import time

import pytest

from etar.errors import ConfigError
from etar.produce.producer import BATCH, Pacer, ProduceOptions, ProduceSummary, _Counters


@pytest.mark.parametrize("options, reason", [
    (ProduceOptions(rate=-1), "--rate"),
    (ProduceOptions(processes=0), "--processes"),
    (ProduceOptions(count=-3), "--count"),
    (ProduceOptions(duration=0), "--duration"),
])
def test_bad_options_fail_with_the_option_named(options: ProduceOptions, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        options.validate()


def test_count_and_rate_are_split_exactly() -> None:
    options = ProduceOptions(rate=100, count=10, processes=3)
    shares = [options.share(i) for i in range(3)]
    assert [count for _, count in shares] == [4, 3, 3]
    assert sum(rate for rate, _ in shares) == pytest.approx(100)


def test_summary_line_is_key_value() -> None:
    summary = ProduceSummary(sent=10, delivered=9, failed=1, elapsed_s=2.0, processes=2,
                             sending_s=1.5)
    fields = dict(item.split("=") for item in summary.line().split())
    assert fields == {"sent": "10", "delivered": "9", "failed": "1", "processes": "2",
                      "elapsed_s": "2.00", "events_per_s": "4.5", "sending_s": "1.50"}
    assert summary.sending_events_per_s == 6.0


def test_pacer_never_sends_early_and_catches_up() -> None:
    pacer = Pacer(rate=1_000, started=100.0)
    assert pacer.due(100.0, sent=0) == 1  # event 0 is due at the start
    assert pacer.due(100.0, sent=1) == 0 and pacer.wait(100.0, sent=1) == pytest.approx(0.001)
    assert pacer.due(100.5, sent=1) == 500  # events 1..500 are due by 0.5 s
    assert pacer.due(100.5, sent=501) == 0 and pacer.wait(100.5, 501) == pytest.approx(0.001)
    assert pacer.due(103.0, sent=501) == BATCH  # far behind: a full batch, then more
    unlimited = Pacer(rate=0, started=100.0)
    assert unlimited.due(100.0, sent=10**9) == BATCH and unlimited.wait(100.0, 5) == 0


def test_paced_sends_follow_the_rate() -> None:
    """Driving the pacer with a coarse clock sends rate x seconds, give or take one event."""
    pacer, sent, now = Pacer(rate=2_000, started=0.0), 0, 0.0
    while now < 2.0:
        sent += max(0, pacer.due(now, sent))
        now += 0.003
    assert abs(sent - 2.0 * 2_000) <= 7


def test_counters_sum_every_worker_and_span_their_sending() -> None:
    counters = _Counters(mp.get_context("spawn"), processes=2)
    counters.publish(0, sent=10, delivered=8, failed=1)
    counters.publish(1, sent=5, delivered=5, failed=0)
    counters.publish(0, sent=12, delivered=12, failed=0)  # totals replace, never add up twice
    assert counters.totals() == (17, 17, 0)
    assert counters.sending_s() == 0.0
    for index in (0, 1):
        counters.mark(index, 3)
    time.sleep(0.05)
    for index in (0, 1):
        counters.mark(index, 4)
    assert 0.04 < counters.sending_s() < 5


_GROUP_SIGTERM = r"""
import multiprocessing.context, os, signal, sys
import etar.produce.producer as producer
import etar.topics
from etar.config import Settings

etar.topics.require_broker = lambda settings: None  # no broker: nothing is ever due to send
producer._register_schema = lambda settings: 1
config = producer.producer_config
producer.producer_config = lambda settings: {**config(settings), "message.timeout.ms": 2000}
real_start = multiprocessing.context.SpawnProcess.start


signals = []


def terminate_group(moment):
    if sys.argv[1] == moment and not signals:
        signals.append(moment)
        os.killpg(0, signal.SIGTERM)


def start(self):
    real_start(self)
    terminate_group("starting")  # the group's SIGTERM while the workers are starting


def progress(sent, delivered, failed):
    terminate_group("running")  # ... or once the parent waits on them


multiprocessing.context.SpawnProcess.start = start
options = producer.ProduceOptions(rate=1, duration=120, processes=2)
settings = Settings(kafka_bootstrap_servers="127.0.0.1:9")
summary = producer.produce(options, settings, progress)
print("summary", summary.line(), signals)
"""


@pytest.mark.parametrize("when", ["starting", "running"])
def test_sigterm_to_the_process_group_stops_cleanly_with_a_summary(when: str) -> None:
    """Workers leave stopping to the parent, whose handler is in place before they start."""
    run = subprocess.run([sys.executable, "-c", _GROUP_SIGTERM, when], capture_output=True,
                         text=True, timeout=120, start_new_session=True)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert "summary sent=" in run.stdout and f"['{when}']" in run.stdout
