"""Run the registry: load the ``_schemas`` log, then serve the REST API with uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from etar.config import get_settings
from etar.topics import ensure_topic
from etar_stack.schema_registry.app import create_app
from etar_stack.schema_registry.store import SchemaStore


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    ensure_topic(settings, settings.schemas_topic, 1,
                 {"cleanup.policy": "compact", "min.insync.replicas": "1"})
    store = SchemaStore(settings.kafka_bootstrap_servers, settings.schemas_topic,
                        settings.schema_registry_timeout_seconds)
    store.load()
    uvicorn.run(create_app(store), host=settings.bind_host, port=settings.schema_registry_port,
                log_level="info")


if __name__ == "__main__":
    main()
