"""Producer options: validation and how work is split between processes."""

from __future__ import annotations

import pytest

from etar.errors import ConfigError
from etar.producer import ProduceOptions, ProduceSummary


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
