"""The Streamlit dashboard in a real browser (Debian's Chromium driven by Playwright)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from etar.config import Settings
from etar.dashboard_view import choices
from etar.events import EventType
from etar.report import fetch, post_report
from tests.browser.chromium import ARTIFACTS, open_page

pytestmark = pytest.mark.integration


def minute_report(minute: datetime, base: int, revenue: float) -> dict[str, Any]:
    """A valid report: ``base + i`` successes and ``i`` errors for the i-th event type."""
    by_type = {t.value: {"success": base + i, "error": i} for i, t in enumerate(EventType)}
    total = sum(c["success"] + c["error"] for c in by_type.values())
    errors = sum(c["error"] for c in by_type.values())
    return {"minute": minute.isoformat(), "total_events": total, "total_errors": errors,
            "error_rate": errors / total, "unique_users": 77, "revenue": revenue,
            "by_event_type": by_type}


def unheld(before: datetime, settings: Settings) -> datetime:
    """The newest minute before ``before`` the API holds no report of."""
    held = {datetime.fromisoformat(r["minute"]) for r in fetch(settings)[1]}
    return next(m for k in range(1, 10_000)
                if (m := before - timedelta(minutes=k)) not in held)


def test_ui_shows_the_posted_report(stack_settings: Settings, tmp_path: Path) -> None:
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    older_minute = minute - timedelta(minutes=2)
    older = minute_report(older_minute, 500, 98.76)
    latest = minute_report(minute, 100, 1234.5)
    post_report(older, stack_settings)
    post_report(latest, stack_settings)

    url = f"http://{stack_settings.bind_host}:{stack_settings.dashboard_ui_port}"
    with open_page(url, "dashboard.png") as page:
        now = page.locator(".st-key-latest [data-testid='stMetric']")
        expect(now.filter(has_text="Total events")).to_contain_text(
            str(latest["total_events"]), timeout=60_000)
        expect(now.filter(has_text="Total errors")).to_contain_text(str(latest["total_errors"]))
        expect(now.filter(has_text="Minute (UTC)")).to_contain_text(f"{minute:%H:%M}")
        expect(now.filter(has_text="Revenue")).to_contain_text("1,234.50")
        expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=30_000)

        # Errors by event type of the shown minute: the most first, error-free types left out.
        rows = page.locator(".st-key-errors tbody tr")
        expect(rows).to_have_count(len(EventType) - 1)
        expect(rows.first).to_contain_text(EventType.PURCHASE.value)
        expect(rows.first).to_contain_text(str(len(EventType) - 1))
        expect(page.locator(".st-key-errors")).not_to_contain_text(EventType.PAGE_VIEW.value)

        # Pick the older minute of the history: its numbers replace the latest's below.
        label = f"{older_minute:%Y-%m-%d %H:%M} UTC"
        page.locator("[data-testid='stSelectbox']").click()
        page.get_by_role("option", name=label).click()
        picked = page.locator(".st-key-selected [data-testid='stMetric']")
        expect(picked.filter(has_text="Total events")).to_contain_text(
            str(older["total_events"]), timeout=20_000)
        expect(picked.filter(has_text="Minute (UTC)")).to_contain_text(f"{older_minute:%H:%M}")
        expect(picked.filter(has_text="Revenue")).to_contain_text("98.76")
        expect(now.filter(has_text="Revenue")).to_contain_text("1,234.50")
        expect(page.locator("strong", has_text=f"Errors by event type · {label}")).to_be_visible()

        # A minute arriving meanwhile (the picker's minutes change) keeps the pick.
        # The label changes with the count, so Streamlit briefly shows the old widget beside
        # the new one: wait for the new count's label itself, not for the old one to go.
        post_report(minute_report(unheld(minute, stack_settings), 300, 5.0), stack_settings)
        held = len(choices(*fetch(stack_settings)))
        expect(page.get_by_text(f"Minute ({held} held by the API")).to_be_visible(
            timeout=20_000)
        expect(picked.filter(has_text="Minute (UTC)")).to_contain_text(f"{older_minute:%H:%M}")
        expect(picked.filter(has_text="Revenue")).to_contain_text("98.76")
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
