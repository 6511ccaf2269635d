"""The dashboard's toolbar in a real browser: viewers get no "Deploy" button and no developer
menu entries (Streamlit ``client.toolbarMode = "viewer"``), even when served from localhost."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from etar.config import Settings
from tests.browser.chromium import open_page

pytestmark = pytest.mark.integration


def test_toolbar_shows_viewer_options_only(stack_settings: Settings) -> None:
    url = f"http://{stack_settings.bind_host}:{stack_settings.dashboard_ui_port}"
    with open_page(url, "dashboard-toolbar.png") as page:
        expect(page.locator("[data-testid='stApp']")).to_be_visible(timeout=60_000)
        expect(page.locator("[data-testid='stToolbar']")).to_be_attached(timeout=30_000)
        page.wait_for_timeout(2_000)  # the toolbar's buttons render after the first run
        expect(page.locator("[data-testid='stAppDeployButton']")).to_have_count(0)
        expect(page.get_by_role("button", name="Deploy")).to_have_count(0)
        menu = page.locator("[data-testid='stMainMenu']")
        if menu.count():  # a viewer's menu (if any) has no developer entries
            menu.click()
            expect(page.get_by_text("Clear cache")).to_have_count(0)
