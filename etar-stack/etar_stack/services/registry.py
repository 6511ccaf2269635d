"""The Schema Registry service (``python -m etar_stack.schema_registry``)."""

from __future__ import annotations

import sys

import httpx

from etar.config import Settings
from etar.security import refuse_unauthenticated_bind
from etar_stack.supervisor import Service


def ready(settings: Settings) -> bool:
    """The registry answers its API (it only listens once the ``_schemas`` log is loaded)."""
    return httpx.get(f"{settings.schema_registry_url}/subjects", timeout=2).status_code == 200


def service(settings: Settings) -> Service:
    """The registry as a supervised service (``python -m etar_stack.schema_registry``)."""
    return Service(
        name="schema-registry",
        command=[sys.executable, "-m", "etar_stack.schema_registry"],
        port=settings.schema_registry_port,
        url=settings.schema_registry_url,
        ready=lambda: ready(settings),
        prepare=lambda: refuse_unauthenticated_bind(settings, settings.bind_host,
                                                    "the schema registry"),
        start_timeout=60,
    )
