"""What the Streamlit dashboard shows, built from minute reports
(``etar.report.minute_report.MinuteReport`` as the API returns them): the numbers of a minute,
its error breakdown, the history table and charts, and the minutes the user can pick. Pure
functions, so they are unit-tested without a browser; ``dashboard/ui.py`` only lays them out.

Errors are broken down per event type and per ``error_code``; reports made before the
per-code breakdown existed (still in the bucket's history) have no ``by_error_code``: their
code breakdown is ``None``, and the rest shows as before.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import plotly.graph_objects as go

Report = dict[str, Any]


def minute_of(report: Report) -> datetime:
    """The report's minute as a datetime (the API sends ISO 8601)."""
    return datetime.fromisoformat(str(report["minute"]).replace("Z", "+00:00"))


def minute_label(report: Report) -> str:
    """``YYYY-MM-DD HH:MM UTC``: how a minute is named in the picker and captions."""
    return f"{minute_of(report):%Y-%m-%d %H:%M} UTC"


def revenue_text(revenue: float) -> str:
    """Revenue with thousands separators and two decimals (``1,234.50``)."""
    return f"{revenue:,.2f}"


def metrics(report: Report) -> list[tuple[str, str]]:
    """(label, value) of each number shown for one minute, in display order."""
    return [("Minute (UTC)", f"{minute_of(report):%H:%M}"),
            ("Total events", str(report["total_events"])),
            ("Total errors", str(report["total_errors"])),
            ("Error rate", f"{report['error_rate']:.2%}"),
            ("Unique users", str(report.get("unique_users", 0))),
            ("Revenue", revenue_text(float(report.get("revenue", 0.0))))]


def error_breakdown(report: Report) -> pd.DataFrame:
    """Errors per event type of one minute, most first, with each type's share of the
    minute's errors and its own error rate; types without errors are left out."""
    rows = []
    total_errors = report["total_errors"]
    for kind, counts in report["by_event_type"].items():
        if not counts["error"]:
            continue
        events = counts["success"] + counts["error"]
        rows.append({"event type": kind, "errors": counts["error"],
                     "share of errors": counts["error"] / total_errors if total_errors else 0.0,
                     "error rate": counts["error"] / events})
    frame = pd.DataFrame(rows, columns=["event type", "errors", "share of errors", "error rate"])
    return frame.sort_values(["errors", "event type"], ascending=[False, True],
                             ignore_index=True)


def error_breakdown_chart(report: Report) -> go.Figure:
    """Horizontal bars of :func:`error_breakdown`."""
    frame = error_breakdown(report)
    figure = go.Figure(go.Bar(x=frame["errors"], y=frame["event type"], orientation="h",
                              marker_color="#e76f51"))
    figure.update_layout(title=f"Errors by event type · {minute_label(report)}",
                         xaxis_title="errors", yaxis={"autorange": "reversed"})
    return figure


def error_code_breakdown(report: Report) -> pd.DataFrame | None:
    """Errors per ``error_code`` of one minute, most first, with each code's share of the
    minute's errors; None for a report without the breakdown (an older report)."""
    codes = report.get("by_error_code")
    if codes is None:
        return None
    total_errors = report["total_errors"]
    frame = pd.DataFrame([{"error code": code, "errors": count,
                           "share of errors": count / total_errors if total_errors else 0.0}
                          for code, count in codes.items() if count],
                         columns=["error code", "errors", "share of errors"])
    return frame.sort_values(["errors", "error code"], ascending=[False, True],
                             ignore_index=True)


def error_code_chart(report: Report) -> go.Figure:
    """Horizontal bars of :func:`error_code_breakdown` (empty for an older report)."""
    frame = error_code_breakdown(report)
    if frame is None:
        frame = pd.DataFrame({"error code": [], "errors": []})
    figure = go.Figure(go.Bar(x=frame["errors"], y=frame["error code"], orientation="h",
                              marker_color="#9d4edd"))
    figure.update_layout(title=f"Errors by error code · {minute_label(report)}",
                         xaxis_title="errors", yaxis={"autorange": "reversed"})
    return figure


def history_frame(history: list[Report]) -> pd.DataFrame:
    """One row per minute of the history, oldest first."""
    rows = [{"minute": minute_of(r), "events": r["total_events"], "errors": r["total_errors"],
             "error rate": r["error_rate"], "unique users": r.get("unique_users", 0),
             "revenue": float(r.get("revenue", 0.0))} for r in history]
    frame = pd.DataFrame(rows, columns=["minute", "events", "errors", "error rate",
                                        "unique users", "revenue"])
    return frame.sort_values("minute", ignore_index=True)


def history_chart(history: list[Report], selected: datetime | None = None) -> go.Figure:
    """Events and errors per minute (left axis), revenue (right axis); the selected minute is
    marked."""
    frame = history_frame(history)
    figure = go.Figure()
    figure.add_scatter(x=frame["minute"], y=frame["events"], name="events", mode="lines+markers")
    figure.add_scatter(x=frame["minute"], y=frame["errors"], name="errors", mode="lines+markers")
    figure.add_scatter(x=frame["minute"], y=frame["revenue"], name="revenue", yaxis="y2",
                       mode="lines+markers", line={"dash": "dot"})
    figure.update_layout(title=f"Recent minutes ({len(frame)})", yaxis={"title": "events"},
                         yaxis2={"title": "revenue", "overlaying": "y", "side": "right"})
    if selected is not None:
        figure.add_vline(x=selected, line_dash="dash", line_color="grey")
    return figure


def choices(latest: Report | None, history: list[Report]) -> dict[str, Report]:
    """The minutes the user can pick, newest first, by :func:`minute_label`: the history and
    the latest report (one entry per minute; the later report of a minute wins)."""
    by_minute = {minute_of(r): r for r in [*history, *([latest] if latest else [])]}
    return {minute_label(by_minute[m]): by_minute[m] for m in sorted(by_minute, reverse=True)}
