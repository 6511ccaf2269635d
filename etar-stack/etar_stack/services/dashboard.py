"""The dashboard's two processes as native-stack services: the API (uvicorn) and the UI."""

from __future__ import annotations

import sys

import httpx

from etar.config import Settings
from etar.security import refuse_unauthenticated_bind, require_secrets
from etar_stack.supervisor import Service


def api_ready(settings: Settings) -> bool:
    return httpx.get(f"{settings.dashboard_api_url}/healthz", timeout=2).status_code == 200


def ui_url(settings: Settings) -> str:
    return f"http://{settings.bind_host}:{settings.dashboard_ui_port}"


def ui_ready(settings: Settings) -> bool:
    return httpx.get(f"{ui_url(settings)}/_stcore/health", timeout=2).text == "ok"


def services(settings: Settings) -> list[Service]:
    api = Service(
        name="dashboard-api",
        command=[sys.executable, "-m", "uvicorn", "--app-dir", str(settings.project_dir),
                 "dashboard.api:app", "--host", settings.bind_host,
                 "--port", str(settings.dashboard_api_port), "--log-level", "warning"],
        port=settings.dashboard_api_port,
        url=f"{settings.dashboard_api_url} (docs: /docs)",
        ready=lambda: api_ready(settings),
        prepare=lambda: require_secrets(settings, settings.bind_host, "dashboard_token"),
        start_timeout=60,
    )
    ui = Service(
        name="dashboard-ui",
        command=[sys.executable, "-m", "streamlit", "run",
                 str(settings.project_dir / "dashboard" / "ui.py"),
                 "--server.address", settings.bind_host,
                 "--server.port", str(settings.dashboard_ui_port), "--server.headless", "true",
                 "--browser.gatherUsageStats", "false",
                 # viewers get no "Deploy" button nor developer menu, even from localhost
                 "--client.toolbarMode", "viewer"],
        port=settings.dashboard_ui_port,
        url=ui_url(settings),
        ready=lambda: ui_ready(settings),
        prepare=lambda: refuse_unauthenticated_bind(settings, settings.bind_host,
                                                    "the dashboard UI (Streamlit)"),
        env={"PYTHONPATH": str(settings.project_dir)},
        start_timeout=90,
    )
    return [api, ui]
