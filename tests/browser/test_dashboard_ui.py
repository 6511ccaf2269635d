"""The Streamlit dashboard in a real browser (Debian's Chromium driven by Playwright)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import expect

from etar.config import Settings
from etar.events import EventType
from etar.report import post_report
from tests.browser.chromium import ARTIFACTS, open_page

pytestmark = pytest.mark.integration


def test_ui_shows_the_posted_report(stack_settings: Settings, tmp_path: Path) -> None:
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    by_type = {t.value: {"success": 100 + i, "error": i} for i, t in enumerate(EventType)}
    total = sum(c["success"] + c["error"] for c in by_type.values())
    errors = sum(c["error"] for c in by_type.values())
    post_report({"minute": minute.isoformat(), "total_events": total, "total_errors": errors,
                 "error_rate": errors / total, "unique_users": 77, "revenue": 1234.5,
                 "by_event_type": by_type}, stack_settings)

    url = f"http://{stack_settings.bind_host}:{stack_settings.dashboard_ui_port}"
    with open_page(url, "dashboard.png") as page:
        metrics = page.locator("[data-testid='stMetric']")
        expect(metrics.filter(has_text="Total events")).to_contain_text(str(total),
                                                                       timeout=60_000)
        expect(metrics.filter(has_text="Total errors")).to_contain_text(str(errors))
        expect(metrics.filter(has_text="Minute (UTC)")).to_contain_text(f"{minute:%H:%M}")
        expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=30_000)
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
