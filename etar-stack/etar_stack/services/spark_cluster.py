"""Spark standalone for the cluster topology: a master and workers from pyspark's own
distribution (``bin/spark-class …deploy.master.Master`` / ``…deploy.worker.Worker``).

Ports are derived from the Spark Connect port (so a shifted ``.env`` shifts them too): the
master at +1, its web UI at +2, worker n's web UI at +2+n. The master is ready when its UI's
``/json`` says ALIVE, a worker when the master lists it ALIVE. The workers carry the S3
credentials in their environment (an executor inherits it), never on a command line.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx

from etar.analysis.submit import spark_home, submit_spec
from etar.config import SPARK_CLUSTER_WORKERS, Settings
from etar.security import refuse_unauthenticated_bind
from etar_stack.supervisor import Service

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
WORKER_CORES = 2
WORKER_MEMORY = "2g"
DEFAULT_CORES = 2
"""Cores an application gets unless it sets ``spark.cores.max``: the Spark Connect server and
a minute's ``spark-submit`` share the 4 cores (each executor 1g, one per worker)."""


def master_port(settings: Settings) -> int:
    return settings.spark_connect_port + 1


def master_ui_port(settings: Settings) -> int:
    return settings.spark_connect_port + 2


def worker_ui_port(settings: Settings, n: int) -> int:
    return settings.spark_connect_port + 2 + n


def master_url(settings: Settings) -> str:
    """``spark://host:port`` of the standalone master."""
    return f"spark://{settings.bind_host}:{master_port(settings)}"


def master_ui(settings: Settings) -> str:
    return f"http://{settings.bind_host}:{master_ui_port(settings)}"


def _state(settings: Settings) -> dict[str, Any]:
    response = httpx.get(f"{master_ui(settings)}/json/", timeout=2)
    response.raise_for_status()
    state: dict[str, Any] = response.json()
    return state


def master_ready(settings: Settings) -> bool:
    return _state(settings).get("status") == "ALIVE"


def worker_ready(settings: Settings, n: int) -> bool:
    """The master lists worker ``n`` (known by its UI port) as ALIVE."""
    workers = _state(settings).get("workers") or []
    port = f":{worker_ui_port(settings, n)}"
    return any(w.get("state") == "ALIVE" and str(w.get("webuiaddress", "")).endswith(port)
               for w in workers if isinstance(w, dict))


def _class(name: str, *args: str) -> list[str]:
    return [str(spark_home() / "bin" / "spark-class"), name, *args]


def services(settings: Settings) -> list[Service]:
    """The master, then the workers (cluster topology only)."""
    if settings.topology != "cluster":
        return []
    env = submit_spec("s3a://warm-up/1970-01-01_00-00.parquet", settings).env
    host = settings.bind_host
    work = settings.state_dir / "data" / "spark"
    found = [Service(
        name="spark-master",
        command=_class(MASTER_CLASS, "--host", host, "--port", str(master_port(settings)),
                       "--webui-port", str(master_ui_port(settings))),
        port=master_port(settings),
        url=f"{master_url(settings)} (UI {master_ui(settings)})",
        ready=partial(master_ready, settings),
        prepare=partial(refuse_unauthenticated_bind, settings, host, "the Spark master"),
        env={**env, "SPARK_MASTER_OPTS": f"-Dspark.deploy.defaultCores={DEFAULT_CORES}"},
        start_timeout=120,
    )]
    for n in range(1, SPARK_CLUSTER_WORKERS + 1):
        folder = work / f"worker-{n}"
        found.append(Service(
            name=f"spark-worker-{n}",
            command=_class(WORKER_CLASS, master_url(settings), "--host", host,
                           "--webui-port", str(worker_ui_port(settings, n)),
                           "--cores", str(WORKER_CORES), "--memory", WORKER_MEMORY,
                           "--work-dir", str(folder)),
            port=worker_ui_port(settings, n),
            url=f"{master_url(settings)} ({WORKER_CORES} cores, {WORKER_MEMORY})",
            ready=partial(worker_ready, settings, n),
            prepare=partial(folder.mkdir, parents=True, exist_ok=True),
            env=env,
            start_timeout=120,
        ))
    return found
