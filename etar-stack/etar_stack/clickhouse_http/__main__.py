"""Run the ClickHouse HTTP endpoint: ``python -m etar_stack.clickhouse_http``."""

from __future__ import annotations

import logging
import os
import sys

import uvicorn

from etar.config import Settings, get_settings
from etar.errors import ConfigError
from etar.security import require_secrets
from etar_stack.clickhouse_http.guard import Guard
from etar_stack.clickhouse_http.server import Limits, User, create_app


def _names(text: str) -> frozenset[str]:
    return frozenset(item.strip().lower() for item in text.split(",") if item.strip())


def users(settings: Settings) -> list[User]:
    """The writer (the sink, the extract) and the read-only reader."""
    return [User(settings.clickhouse_user, settings.clickhouse_password.get_secret_value()),
            User(settings.clickhouse_reader_user,
                 settings.clickhouse_reader_password.get_secret_value(),
                 settings.clickhouse_reader_readonly)]


def main() -> None:
    os.environ["TZ"] = "UTC"  # the server timezone clients see, whatever the machine's
    settings = get_settings()
    try:  # off loopback, an empty password lets anyone in as that user: refused like a default
        require_secrets(settings, settings.bind_host, "clickhouse_password",
                        "clickhouse_reader_password")
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    path = settings.state_dir / "data" / "clickhouse"
    user_files = settings.clickhouse_user_files
    user_files.mkdir(parents=True, exist_ok=True)
    os.chdir(user_files)  # relative paths of file(), INTO OUTFILE, FROM INFILE resolve here
    rules = Guard(str(user_files), _names(settings.clickhouse_remote_url_allow_hosts))
    limits = Limits(max_query_bytes=settings.clickhouse_max_query_bytes,
                    max_sessions=settings.clickhouse_max_sessions,
                    max_external_bytes=settings.clickhouse_max_external_bytes,
                    allowed_origins=frozenset(
                        o.strip() for o in settings.clickhouse_allowed_origins.split(",")
                        if o.strip()))
    uvicorn.run(create_app(str(path), users(settings), rules, limits), host=settings.bind_host,
                port=settings.clickhouse_port, log_level="warning", timeout_graceful_shutdown=30)


if __name__ == "__main__":
    main()
