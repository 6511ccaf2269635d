"""The dashboard's numbers, error breakdown, history and minute picker (``etar.report.view``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from etar.events.event import EventType
from etar.report import view


def report(minute: str, errors: dict[str, int] | None = None, revenue: float = 0.0,
           success: int = 10) -> dict[str, Any]:
    """A report as the API returns it: ``success`` per type, ``errors`` where given."""
    by_type = {t.value: {"success": success, "error": (errors or {}).get(t.value, 0)}
               for t in EventType}
    total = sum(c["success"] + c["error"] for c in by_type.values())
    wrong = sum(c["error"] for c in by_type.values())
    return {"minute": minute, "total_events": total, "total_errors": wrong,
            "error_rate": wrong / total, "unique_users": 5, "revenue": revenue,
            "by_event_type": by_type}


def test_metrics_include_revenue_formatted() -> None:
    shown = dict(view.metrics(report("2026-12-05T14:07:00Z", {"CHECKOUT": 2}, 1234.5)))
    assert shown["Revenue"] == "1,234.50"
    assert shown["Minute (UTC)"] == "14:07"
    assert shown["Total errors"] == "2"
    assert shown["Error rate"] == "2.78%"  # 2 of 72


def test_metrics_of_a_report_without_revenue_show_zero() -> None:
    old = report("2026-12-05T14:07:00+00:00")
    del old["revenue"]
    assert dict(view.metrics(old))["Revenue"] == "0.00"


def test_error_breakdown_most_first_without_error_free_types() -> None:
    frame = view.error_breakdown(report("2026-12-05T14:07:00Z",
                                        {"SEARCH": 1, "PURCHASE": 3, "CHECKOUT": 3}))
    assert list(frame["event type"]) == ["CHECKOUT", "PURCHASE", "SEARCH"]
    assert list(frame["errors"]) == [3, 3, 1]
    assert list(frame["share of errors"]) == [3 / 7, 3 / 7, 1 / 7]
    assert frame["error rate"][2] == 1 / 11


def test_error_breakdown_of_a_minute_without_errors_is_empty() -> None:
    frame = view.error_breakdown(report("2026-12-05T14:07:00Z"))
    assert frame.empty
    assert list(frame.columns) == ["event type", "errors", "share of errors", "error rate"]
    assert len(view.error_breakdown_chart(report("2026-12-05T14:07:00Z")).data[0].x) == 0


def test_error_breakdown_chart_draws_the_table() -> None:
    figure = view.error_breakdown_chart(report("2026-12-05T14:07:00Z", {"SEARCH": 1,
                                                                        "PURCHASE": 3}))
    assert list(figure.data[0].y) == ["PURCHASE", "SEARCH"]
    assert list(figure.data[0].x) == [3, 1]
    assert "2026-12-05 14:07 UTC" in figure.layout.title.text


def test_history_sorted_oldest_first_with_revenue() -> None:
    history = [report("2026-12-05T14:08:00Z", revenue=2.0),
               report("2026-12-05T14:06:00Z", revenue=1.0)]
    frame = view.history_frame(history)
    assert [m.minute for m in frame["minute"]] == [6, 8]
    assert list(frame["revenue"]) == [1.0, 2.0]
    figure = view.history_chart(history, datetime(2026, 12, 5, 14, 8, tzinfo=UTC))
    assert [trace.name for trace in figure.data] == ["events", "errors", "revenue"]
    assert list(figure.data[2].y) == [1.0, 2.0]
    assert figure.data[2].yaxis == "y2"
    assert len(figure.layout.shapes) == 1  # the selected minute's marker


def test_empty_history() -> None:
    assert view.history_frame([]).empty
    assert view.choices(None, []) == {}


def test_choices_newest_first_latest_included_once() -> None:
    older = report("2026-12-05T14:06:00Z", revenue=1.0)
    stale = report("2026-12-05T14:07:00Z", revenue=2.0)
    latest = report("2026-12-05T14:07:00+00:00", revenue=3.0)
    options = view.choices(latest, [older, stale])
    assert list(options) == ["2026-12-05 14:07 UTC", "2026-12-05 14:06 UTC"]
    assert options["2026-12-05 14:07 UTC"]["revenue"] == 3.0
    assert options["2026-12-05 14:06 UTC"] is older


def test_error_code_breakdown_most_first_with_shares() -> None:
    coded = report("2026-12-05T14:07:00Z", {"CHECKOUT": 3, "PURCHASE": 1})
    coded["by_error_code"] = {"TIMEOUT": 1, "PAYMENT_DECLINED": 3}
    frame = view.error_code_breakdown(coded)
    assert frame is not None
    assert frame.to_dict("records") == [
        {"error code": "PAYMENT_DECLINED", "errors": 3, "share of errors": 0.75},
        {"error code": "TIMEOUT", "errors": 1, "share of errors": 0.25}]
    assert list(view.error_code_chart(coded).data[0].y) == ["PAYMENT_DECLINED", "TIMEOUT"]


def test_an_older_report_without_error_codes_has_no_code_breakdown() -> None:
    older = report("2026-12-05T14:07:00Z", {"CHECKOUT": 3})
    assert view.error_code_breakdown(older) is None
    assert len(view.error_code_chart(older).data[0].x) == 0
    assert not view.error_breakdown(older).empty  # the per-type breakdown is still there
