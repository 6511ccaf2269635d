"""Run the ClickHouse HTTP endpoint: ``python -m etar.native.clickhouse``."""

from __future__ import annotations

import logging
import os

import uvicorn

from etar.config import get_settings
from etar.native.clickhouse.server import Credentials, create_app
from etar.security import refuse_default_secrets


def main() -> None:
    os.environ["TZ"] = "UTC"  # the server timezone clients see, whatever the machine's
    settings = get_settings()
    refuse_default_secrets(settings, settings.bind_host, "clickhouse_password")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    path = settings.state_dir / "data" / "clickhouse"
    path.mkdir(parents=True, exist_ok=True)
    credentials = Credentials(settings.clickhouse_user,
                              settings.clickhouse_password.get_secret_value())
    uvicorn.run(create_app(str(path), credentials), host=settings.bind_host,
                port=settings.clickhouse_port, log_level="warning", timeout_graceful_shutdown=30)


if __name__ == "__main__":
    main()
