"""JupyterLab in a real browser: the workbook's notebooks are listed.

Uses the stack's `jupyter` service when it answers; otherwise (a stack started by code that
predates it) starts the same service definition on a free port for this test.
"""

from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from etar.config import Settings
from etar_stack.services import jupyter
from tests import REPO_ROOT
from tests.browser.chromium import open_page

pytestmark = pytest.mark.integration
NOTEBOOKS = sorted(p.name for p in (REPO_ROOT / "notebooks").glob("*.ipynb"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(settings: Settings) -> bool:
    try:
        return jupyter.ready(settings)
    except Exception:
        return False


@pytest.fixture
def jupyter_settings(stack_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    if _answers(stack_settings) and (stack_settings.project_dir / "notebooks").is_dir():
        yield stack_settings
        return
    settings = stack_settings.model_copy(update={
        "jupyter_port": _free_port(), "project_dir": REPO_ROOT, "state_dir": tmp_path})
    service = jupyter.service(settings)
    jupyter.configure(settings)  # what the stack's prepare step writes
    log = (tmp_path / "jupyter.log").open("wb")
    process = subprocess.Popen(service.command, env={**os.environ, **service.env},
                               stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 90
        while not _answers(settings):
            assert process.poll() is None, (tmp_path / "jupyter.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "JupyterLab did not start in 90 s"
            time.sleep(0.5)
        yield settings
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def test_the_token_is_not_on_the_command_line(jupyter_settings: Settings) -> None:
    secret = jupyter_settings.jupyter_token.get_secret_value()
    assert not any(secret in part for part in jupyter.command(jupyter_settings))
    assert jupyter.environment(jupyter_settings)["JUPYTER_TOKEN"] == secret


def test_jupyterlab_lists_the_notebooks(jupyter_settings: Settings) -> None:
    token = jupyter_settings.jupyter_token.get_secret_value()
    url = f"{jupyter.url(jupyter_settings)}/lab?token={token}"
    with open_page(url, "jupyterlab.png") as page:
        listing = page.locator(".jp-DirListing-content")
        for name in NOTEBOOKS:
            expect(listing.get_by_text(name, exact=True)).to_be_visible(timeout=90_000)
    assert NOTEBOOKS == ["00_stack.ipynb", "01_produce.ipynb", "02_partitions.ipynb",
                         "03_extract.ipynb", "04_analyze.ipynb", "05_report.ipynb"]


def _get(settings: Settings, path: str) -> httpx.Response:
    token = settings.jupyter_token.get_secret_value()
    response = httpx.get(f"{jupyter.url(settings)}{path}", timeout=30,
                         headers={"Authorization": f"token {token}"})
    response.raise_for_status()
    return response


def test_the_news_prompt_is_off(jupyter_settings: Settings) -> None:
    """The lab page's config disables the announcements plugin (the "get notified about
    official Jupyter news?" prompt)."""
    page = _get(jupyter_settings, "/lab").text
    found = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                      page, re.S)
    assert found, page[:2000]
    config = json.loads(html.unescape(found.group(1)))
    assert "@jupyterlab/apputils-extension:announcements" in config["disabledExtensions"]


def test_the_kernel_is_named_after_etar_and_starts(jupyter_settings: Settings) -> None:
    specs = _get(jupyter_settings, "/api/kernelspecs").json()
    assert specs["default"] == jupyter.KERNEL_NAME == "python3"  # what the notebooks name
    spec = specs["kernelspecs"][jupyter.KERNEL_NAME]["spec"]
    assert spec["display_name"] == jupyter.kernel_display_name()
    assert spec["display_name"].startswith("etar (Python 3.")
    token = jupyter_settings.jupyter_token.get_secret_value()
    with httpx.Client(base_url=jupyter.url(jupyter_settings), timeout=60,
                      headers={"Authorization": f"token {token}"}) as client:
        started = client.post("/api/kernels", json={"name": jupyter.KERNEL_NAME})
        assert started.status_code == 201, started.text
        assert client.delete(f"/api/kernels/{started.json()['id']}").status_code == 204
