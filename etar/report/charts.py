"""Plotly figures the notebooks show (the dashboard draws the same report chart)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go


def throughput(series: pd.DataFrame) -> go.Figure:
    """Delivered events per second while producing (from ``workbook.produce_measured``)."""
    return px.line(series, x="t", y="events_per_s", markers=True,
                   labels={"t": "seconds since start", "events_per_s": "delivered events/s"},
                   title="Producer throughput")


def partitions(frame: pd.DataFrame) -> go.Figure:
    """Rows (bars) and active parts (line) per ``event_minute`` partition."""
    figure = go.Figure()
    figure.add_bar(x=frame["event_minute"], y=frame["rows"], name="rows")
    figure.add_scatter(x=frame["event_minute"], y=frame["parts"], name="parts", yaxis="y2",
                       mode="lines+markers")
    figure.update_layout(title="Rows and parts per minute partition",
                         yaxis={"title": "rows"},
                         yaxis2={"title": "parts", "overlaying": "y", "side": "right"})
    return figure


def by_event_type(report: dict[str, Any], title: str = "") -> go.Figure:
    """Success vs error per event type of one minute report (what the dashboard draws)."""
    rows = [{"event_type": kind, "status": status, "events": counts[status]}
            for kind, counts in report["by_event_type"].items()
            for status in ("success", "error")]
    return px.bar(pd.DataFrame(rows), x="event_type", y="events", color="status",
                  barmode="group", title=title or f"Minute {report['minute']}",
                  color_discrete_map={"success": "#2a9d8f", "error": "#e76f51"})


def events_per_type(frame: pd.DataFrame, title: str = "Events per type") -> go.Figure:
    """Events per type and status of a minute's rows."""
    counts = frame.groupby(["event_type", "status"]).size().reset_index(name="events")
    return px.bar(counts, x="event_type", y="events", color="status", barmode="group",
                  title=title)
