"""JupyterLab on the native stack: the workbook's notebooks, served from ``<project>/notebooks``.

Bound to ``bind_host:jupyter_port``; the token comes from ``ETAR_JUPYTER_TOKEN`` and reaches
the server through its ``JUPYTER_TOKEN`` environment variable, never the command line. Ready
once ``GET /api/status`` answers with that token. ``JUPYTER_CONFIG_DIR`` / ``JUPYTER_DATA_DIR``
/ runtime files live under ``<state>/jupyter``, so nothing is written to the home folder.
Before it starts, that config turns the announcements plugin off (no "get notified about
official Jupyter news?" prompt), and that data folder gets the kernel ``python3`` (the name the
notebooks, papermill and nbval use) displayed as "etar (Python 3.x)".
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import httpx

from etar.config import Settings
from etar.security import require_secrets
from etar_stack.supervisor import Service


def url(settings: Settings) -> str:
    return f"http://{settings.bind_host}:{settings.jupyter_port}"


def ready(settings: Settings) -> bool:
    """The server answers ``/api/status`` for the configured token."""
    token = settings.jupyter_token.get_secret_value()
    response = httpx.get(f"{url(settings)}/api/status", timeout=2,
                         headers={"Authorization": f"token {token}"})
    return response.status_code == 200


DISABLED_PLUGINS = ("@jupyterlab/apputils-extension:announcements",)
"""JupyterLab plugins the stack turns off: the news/update-check prompt of every new user."""
KERNEL_NAME = "python3"
"""The kernel the notebooks name (papermill and nbval find ipykernel's own under this name)."""


def kernel_display_name() -> str:
    return f"etar (Python {sys.version_info.major}.{sys.version_info.minor})"


def _home(settings: Settings) -> Path:
    return settings.state_dir / "jupyter"


def configure(settings: Settings) -> None:
    """Write the server's lab page config (plugins off) and the etar kernelspec."""
    from ipykernel.kernelspec import write_kernel_spec

    home = _home(settings)
    page_config = home / "config" / "labconfig" / "page_config.json"
    page_config.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(page_config.read_text()) if page_config.exists() else {}
    disabled = current.setdefault("disabledExtensions", {})
    disabled.update(dict.fromkeys(DISABLED_PLUGINS, True))
    page_config.write_text(json.dumps(current, indent=2))
    kernel = home / "data" / "kernels" / KERNEL_NAME
    shutil.rmtree(kernel, ignore_errors=True)
    kernel.parent.mkdir(parents=True, exist_ok=True)
    write_kernel_spec(kernel, overrides={"display_name": kernel_display_name()})


def _prepare(settings: Settings) -> None:
    require_secrets(settings, settings.bind_host, "jupyter_token")
    configure(settings)


def environment(settings: Settings) -> dict[str, str]:
    """The server's environment: its token and its own config/data/runtime folders."""
    home = _home(settings)
    return {"JUPYTER_TOKEN": settings.jupyter_token.get_secret_value(),
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            # this data folder before the virtualenv's, so its python3 kernelspec wins
            "JUPYTER_PREFER_ENV_PATH": "0",
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
        prepare=lambda: _prepare(settings),
        env=environment(settings),
        start_timeout=90,
    )
