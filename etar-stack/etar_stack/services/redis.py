"""Redis, the Celery broker of Airflow's CeleryExecutor: Debian's ``redis-server``.

It listens on ``bind_host:redis_port`` only and keeps nothing on disk (``--save ""``,
``--appendonly no``): queued Celery messages are transient, Airflow's state is in Postgres.
"""

from __future__ import annotations

import shutil

from etar.config import Settings
from etar.errors import StackError
from etar.security import refuse_unauthenticated_bind
from etar_stack.supervisor import Service


def broker_url(settings: Settings) -> str:
    return f"redis://{settings.bind_host}:{settings.redis_port}/0"


def prepare(settings: Settings) -> None:
    refuse_unauthenticated_bind(settings, settings.bind_host, "Redis (no password)")
    if shutil.which("redis-server") is None:
        raise StackError("redis-server is not installed: `make install` (as root) installs "
                         "Debian's redis-server, or `apt-get install redis-server`")
    (settings.state_dir / "data" / "redis").mkdir(parents=True, exist_ok=True)


def ready(settings: Settings) -> bool:
    """Redis answers PING."""
    import redis

    client = redis.Redis(host=settings.bind_host, port=settings.redis_port,
                         socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    finally:
        client.close()


def service(settings: Settings) -> Service:
    return Service(
        name="redis",
        command=["redis-server", "--bind", settings.bind_host, "--port", str(settings.redis_port),
                 "--save", "", "--appendonly", "no", "--protected-mode", "yes",
                 "--daemonize", "no", "--dir", str(settings.state_dir / "data" / "redis")],
        port=settings.redis_port,
        url=broker_url(settings),
        ready=lambda: ready(settings),
        prepare=lambda: prepare(settings),
        start_timeout=30,
    )
