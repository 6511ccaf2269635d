"""etar dashboard: the latest minute's numbers, and any minute of the history the API holds
(its numbers, chart and errors by event type), redrawn every few seconds; the minutes whose
report is missing or stale (``etar.orchestration.reconcile``), every minute. The figures and
tables are built by ``etar.report.view``.

    streamlit run dashboard/ui.py
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd
import streamlit as st

from etar.config import get_settings
from etar.report import view
from etar.report.charts import by_event_type
from etar.report.minute_report import fetch

STALE_AFTER_S = 180
AUDIT_EVERY_S = 60
PICKED = "picked_minute"  # session key of the minute picked in the history (None: the newest)

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
    minute = view.minute_of(latest)
    age = (datetime.now(UTC) - minute).total_seconds()
    if age > STALE_AFTER_S:
        st.warning(f"Stale data: the latest report is for {minute:%Y-%m-%d %H:%M} UTC, "
                   f"{age / 60:.0f} minutes ago.")
    st.caption(f"Latest minute {view.minute_label(latest)} · refreshed "
               f"{datetime.now(UTC):%H:%M:%S}")
    with st.container(key="latest"):
        show_metrics(latest)

    options = view.choices(latest, history)
    labels = list(options)
    picked = st.session_state.get(PICKED)
    index = labels.index(picked) if picked in labels else 0
    st.subheader("Browse the history")
    label = st.selectbox(f"Minute ({len(labels)} held by the API, newest first)", labels,
                         index=index)
    # Newest picked: follow the newest as minutes arrive; an older one: stay on it.
    st.session_state[PICKED] = None if label == labels[0] else label
    report = options[label]
    with st.container(key="selected"):
        show_metrics(report)
    left, right = st.columns(2)
    left.plotly_chart(by_event_type(report, f"Success vs error per event type · {label}"),
                      width="stretch")
    right.plotly_chart(view.history_chart(history or [latest], view.minute_of(report)),
                       width="stretch")
    st.markdown(f"**Errors by event type · {label}**")
    breakdown = view.error_breakdown(report)
    if breakdown.empty:
        st.success("No errors in this minute.")
    else:
        left, right = st.columns(2)
        with left.container(key="errors"):
            st.table(breakdown.style.format({"share of errors": "{:.1%}",
                                             "error rate": "{:.1%}"}).hide(axis="index"))
        right.plotly_chart(view.error_breakdown_chart(report), width="stretch")
        st.markdown(f"**Errors by error code · {label}**")
        codes = view.error_code_breakdown(report)
        if codes is None:
            st.caption("This report was made before reports counted errors per error code.")
        else:
            left, right = st.columns(2)
            with left.container(key="error_codes"):
                st.table(codes.style.format({"share of errors": "{:.1%}"}).hide(axis="index"))
            right.plotly_chart(view.error_code_chart(report), width="stretch")
    notebooks(report)


def notebooks(report: dict[str, Any]) -> None:
    """Links to the minute's executed notebooks (the replay DAG's), a failure with its cell."""
    stem = f"{view.minute_of(report):%Y-%m-%d_%H-%M}"
    st.markdown(f"**Executed notebooks · {view.minute_label(report)}**")
    try:
        response = httpx.get(f"{settings.dashboard_api_url}/notebooks/{stem}", timeout=3.0)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        st.warning(f"The minute's notebooks could not be listed ({exc}).")
        return
    runs = response.json()
    if not runs:
        st.caption("None: trigger the etar_notebook_replay DAG with this minute to get them.")
        return
    with st.container(key="notebooks"):
        for run in runs:
            if run["status"] == "failed":
                st.error(f"[{run['notebook']}]({run['url']}) failed in cell [{run['cell']}] "
                         f"(cell #{run['cell_index']}): {run['error']}")
            else:
                st.markdown(f"✅ [{run['notebook']}]({run['url']})")


def show_metrics(report: dict[str, Any]) -> None:
    """One minute's numbers, side by side."""
    for column, (name, value) in zip(st.columns(6), view.metrics(report), strict=True):
        column.metric(name, value)


@st.fragment(run_every=AUDIT_EVERY_S)
def gaps() -> None:
    from etar.orchestration.failures import describe
    from etar.orchestration.reconcile import audit

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
