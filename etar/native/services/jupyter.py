"""JupyterLab on the native stack: the workbook's notebooks, served from ``<project>/notebooks``.

Bound to ``bind_host:jupyter_port``; the token comes from ``ETAR_JUPYTER_TOKEN`` and reaches
the server through its ``JUPYTER_TOKEN`` environment variable, never the command line. Ready
once ``GET /api/status`` answers with that token. ``JUPYTER_CONFIG_DIR`` / ``JUPYTER_DATA_DIR``
/ runtime files live under ``<state>/jupyter``, so nothing is written to the home folder.
"""

from __future__ import annotations

import os
import sys

import httpx

from etar.config import Settings
from etar.native.supervisor import Service
from etar.security import require_secrets


def url(settings: Settings) -> str:
    return f"http://{settings.bind_host}:{settings.jupyter_port}"


def ready(settings: Settings) -> bool:
    """The server answers ``/api/status`` for the configured token."""
    token = settings.jupyter_token.get_secret_value()
    response = httpx.get(f"{url(settings)}/api/status", timeout=2,
                         headers={"Authorization": f"token {token}"})
    return response.status_code == 200


def environment(settings: Settings) -> dict[str, str]:
    """The server's environment: its token and its own config/runtime folders."""
    home = settings.state_dir / "jupyter"
    return {"JUPYTER_TOKEN": settings.jupyter_token.get_secret_value(),
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "IPYTHONDIR": str(home / "ipython")}


def command(settings: Settings) -> list[str]:
    """``jupyter lab`` on the notebooks folder (no secret in it)."""
    return [sys.executable, "-m", "jupyter", "lab", "--no-browser",
            f"--ServerApp.ip={settings.bind_host}", f"--ServerApp.port={settings.jupyter_port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={settings.project_dir / 'notebooks'}",
            # the server refuses root unless told; the stack runs as whoever starts it
            *(["--ServerApp.allow_root=True"] if os.geteuid() == 0 else [])]


def service(settings: Settings) -> Service:
    return Service(
        name="jupyter",
        command=command(settings),
        port=settings.jupyter_port,
        url=f"{url(settings)}/lab (token: ETAR_JUPYTER_TOKEN)",
        ready=lambda: ready(settings),
        prepare=lambda: require_secrets(settings, settings.bind_host, "jupyter_token"),
        env=environment(settings),
        start_timeout=90,
    )
