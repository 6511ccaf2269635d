"""etar dashboard: the latest minute and recent history, redrawn every few seconds; the
minutes whose report is missing or stale (``etar.reconcile``), every minute.

    streamlit run dashboard/ui.py
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pandas as pd
import plotly.express as px
import streamlit as st

from etar.config import get_settings
from etar.report import fetch

STALE_AFTER_S = 180
AUDIT_EVERY_S = 60

settings = get_settings()
st.set_page_config(page_title="etar dashboard", page_icon="📈", layout="wide")
st.title("etar — e-commerce events, minute by minute")


@st.fragment(run_every=settings.dashboard_poll_seconds)
def live() -> None:
    try:
        latest, history = fetch(settings)
    except httpx.HTTPError as exc:
        st.error(f"The dashboard API at {settings.dashboard_api_url} is unreachable ({exc}). "
                 "Retrying…")
        return
    if latest is None:
        st.info("No report yet: the first one arrives a minute or two after events flow.")
        return
    minute = datetime.fromisoformat(latest["minute"])
    age = (datetime.now(UTC) - minute).total_seconds()
    if age > STALE_AFTER_S:
        st.warning(f"Stale data: the latest report is for {minute:%Y-%m-%d %H:%M} UTC, "
                   f"{age / 60:.0f} minutes ago.")
    st.caption(f"Minute {minute:%Y-%m-%d %H:%M} UTC · refreshed {datetime.now(UTC):%H:%M:%S}")
    cols = st.columns(5)
    cols[0].metric("Minute (UTC)", f"{minute:%H:%M}")
    cols[1].metric("Total events", str(latest["total_events"]))
    cols[2].metric("Total errors", str(latest["total_errors"]))
    cols[3].metric("Error rate", f"{latest['error_rate']:.2%}")
    cols[4].metric("Unique users", str(latest["unique_users"]))

    by_type = pd.DataFrame([{"event type": t, "outcome": outcome, "events": counts[outcome]}
                            for t, counts in latest["by_event_type"].items()
                            for outcome in ("success", "error")])
    chart = px.bar(by_type, x="event type", y="events", color="outcome", barmode="group",
                   color_discrete_map={"success": "#2a9d8f", "error": "#e76f51"},
                   title="Success vs error per event type")
    left, right = st.columns(2)
    left.plotly_chart(chart, width="stretch")

    frame = pd.DataFrame([{"minute": datetime.fromisoformat(r["minute"]),
                           "events": r["total_events"], "errors": r["total_errors"]}
                          for r in history])
    trend = px.line(frame, x="minute", y=["events", "errors"], markers=True,
                    title=f"Recent minutes ({len(frame)})")
    right.plotly_chart(trend, width="stretch")


@st.fragment(run_every=AUDIT_EVERY_S)
def gaps() -> None:
    from etar.failures import describe
    from etar.reconcile import audit

    st.subheader("Minutes not reported yet")
    try:
        found = audit(settings)
    except Exception as exc:
        st.warning(f"The reconciliation could not be read: {describe(exc)}")
        return
    st.caption(found.summary())
    if not found.gaps:
        st.success("Every minute with events is reported, equal to its count in ClickHouse.")
        return
    st.warning(f"Minutes with events but no report equal to their count: {len(found.gaps)}. "
               "The pipeline's reconcile task redoes them, oldest first.")
    st.dataframe(pd.DataFrame([m.as_dict() for m in found.gaps]), hide_index=True)


live()
gaps()
