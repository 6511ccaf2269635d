"""A minute's executed notebooks one click away, in a real browser: from the replay DAG's task
instance in the Airflow UI and from the dashboard's picked minute. The replayed minute has
no events, so 03_extract fails in its row check: the page shows the failing cell."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect

from etar.config import Settings
from etar.events.event import EventType
from etar.report.minute_report import post_report
from tests.browser.chromium import ARTIFACTS, open_page
from tests.dags.airflow_runner import FailedReplay, replay_empty_minute

pytestmark = pytest.mark.integration

LINK = "Executed notebook"
FAILURE = "has no events"
"""The error 03_extract raises for an empty minute."""


@pytest.fixture(scope="module")
def failed(stack_settings: Settings) -> FailedReplay:
    replay = replay_empty_minute(stack_settings)
    assert replay.states["extract"] == "failed", replay.states
    assert replay.link is not None
    return replay


def _shows_the_failing_notebook(page: Page) -> None:
    expect(page.locator("body")).to_contain_text(FAILURE, timeout=30_000)
    expect(page.locator("body")).to_contain_text("require_rows")  # the failing cell's code


def test_the_airflow_task_instance_links_its_executed_notebook(stack_settings: Settings,
                                                               failed: FailedReplay) -> None:
    airflow = stack_settings.airflow_api_url
    task = (f"{airflow}/dags/etar_notebook_replay/runs/{quote(failed.run_id, safe='')}"
            "/tasks/extract/details")  # the task instance's Details tab lists its links
    with open_page(f"{airflow}/auth/login?next={quote(task, safe='')}",
                   "airflow-notebook-link.png") as page:
        page.get_by_label("Username").fill(stack_settings.airflow_admin_user)
        page.get_by_label("Password").fill(
            stack_settings.airflow_admin_password.get_secret_value())
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/dags/**", timeout=60_000)
        if "/tasks/extract/details" not in page.url:
            page.goto(task)
        link = page.get_by_role("link", name=LINK)
        expect(link).to_be_visible(timeout=60_000)
        expect(link).to_have_attribute("href", str(failed.link))
        page.goto(str(failed.link))
        _shows_the_failing_notebook(page)
    assert (ARTIFACTS / "airflow-notebook-link.png").stat().st_size > 10_000


def _report(minute: str) -> dict[str, Any]:
    by_type = {t.value: {"success": 1, "error": 0} for t in EventType}
    return {"minute": minute, "total_events": len(EventType), "total_errors": 0,
            "by_event_type": by_type}


def test_the_dashboard_links_the_picked_minutes_notebooks(stack_settings: Settings,
                                                          failed: FailedReplay) -> None:
    # The minute has no events, so no real report: a posted one puts it in the picker.
    post_report(_report(str(failed.minute)), stack_settings)
    label = f"{failed.minute.start:%Y-%m-%d %H:%M} UTC"
    url = f"http://{stack_settings.bind_host}:{stack_settings.dashboard_ui_port}"
    with open_page(url, "dashboard-notebook-page.png") as page:
        page.locator("[data-testid='stSelectbox']").click(timeout=60_000)
        page.get_by_role("option", name=label).click()
        notebooks = page.locator(".st-key-notebooks")
        expect(notebooks).to_contain_text("03_extract failed in cell", timeout=30_000)
        expect(notebooks).to_contain_text(FAILURE)
        link = notebooks.get_by_role("link", name="03_extract")
        expect(link).to_have_attribute("href", str(failed.link))
        page.screenshot(path=str(ARTIFACTS / "dashboard-notebooks.png"), full_page=True)
        page.goto(str(failed.link))
        _shows_the_failing_notebook(page)
