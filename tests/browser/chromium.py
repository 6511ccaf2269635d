"""A page in Debian's Chromium, driven by Playwright, for the browser tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from tests import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"
"""Screenshots the browser tests leave behind."""
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextmanager
def open_page(url: str, screenshot: str) -> Iterator[Page]:
    """``url`` in a headless Chromium page; a full-page screenshot is kept after the checks."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make install` installs Debian's chromium package")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            yield page
            page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
        finally:
            browser.close()
