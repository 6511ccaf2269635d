"""One `Settings` object for every endpoint, credential, topic and port.

Values come from the environment (prefix ``ETAR_``) and a ``.env`` file in the working
directory, so the notebooks, the CLI, the native stack and the compose stack all read the same
names. Relative paths (the state folder, the project folder) are taken from the working
directory: etar runs the same from a checkout and as an installed wheel.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from etar import resources

KAFKA_CLUSTER_SIZE = 3
"""Brokers (combined broker + KRaft controller nodes) of the cluster topology."""
SINK_CLUSTER_INSTANCES = 2
"""Sink instances (one consumer group) of the cluster topology."""
AIRFLOW_CLUSTER_WORKERS = 2
"""Celery workers of the cluster topology."""
SPARK_CLUSTER_WORKERS = 2
"""Spark standalone workers of the cluster topology (behind one master)."""


class Settings(BaseSettings):
    """Configuration of every etar component (see ``.env.example`` for each name)."""

    model_config = SettingsConfigDict(
        env_prefix="ETAR_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # Native stack
    state_dir: Path = Field(Path(".etar"), description="all native-stack state")
    project_dir: Path = Field(Path("."), description="the checkout: dags/, dashboard/, notebooks/")
    bind_host: str = Field("127.0.0.1", description="address the native services listen on")
    allow_unauthenticated_bind: bool = Field(
        False, description="let services without authentication (Kafka, the schema registry, "
        "Spark Connect, Redis, the dashboard UI) listen on a non-loopback bind_host")
    stack_services: str = Field(
        "", description="comma-separated services `etar stack` runs (empty: all of them)")
    stack_restart_burst: int = Field(
        5, ge=1, description="restarts of one service allowed within the interval below")
    stack_restart_interval_seconds: float = Field(
        600.0, gt=0, description="the restart window; past the burst a service waits for it")
    topology: Literal["single", "cluster"] = Field(
        "single", description="single: one process per engine; cluster: 3 Kafka brokers "
        "(replication factor 3) and 2 sink instances on this machine")

    # Kafka (KRaft)
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    kafka_cluster_id: str = Field("ZXRhci1uYXRpdmUtc3RhYw", description="KRaft cluster id")
    kafka_heap: str = Field("768m", description="broker JVM heap (-Xmx)")
    kafka_topic: str = "user_interactions"
    kafka_topic_partitions: int = Field(6, ge=1)
    kafka_dlq_topic: str = "user_interactions_dlq"
    kafka_cluster_heap: str = Field("384m", description="each broker's heap (-Xmx), cluster")
    kafka_member_port_step: int = Field(
        100, ge=1, description="cluster: broker n listens at the broker (and controller) port "
        "+ step * (n - 1)")

    # Schema Registry
    schema_registry_url: str = "http://127.0.0.1:8081"
    schemas_topic: str = "_schemas"
    schema_registry_timeout_seconds: float = Field(
        15.0, gt=0, description="a write to the schemas topic unacknowledged this long: 50002")

    # ClickHouse (the native stack serves chdb on ClickHouse's HTTP interface)
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = Field(8123, ge=1, le=65535)
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr = SecretStr("etar")
    clickhouse_reader_user: str = Field(
        "reader", description="a read-only user (readonly profile) for IDEs, notebooks, BI")
    clickhouse_reader_password: SecretStr = SecretStr("etar-reader")
    clickhouse_reader_readonly: int = Field(
        2, ge=1, le=2, description="the reader's readonly: 1 no setting changes, 2 settings ok")
    clickhouse_remote_url_allow_hosts: str = Field(
        "", description="hosts (host or host:port, comma-separated) url()/s3()/remote()… may "
                        "reach; empty: none (the native stack adds its own S3 endpoint)")
    clickhouse_allowed_origins: str = Field(
        "", description="browser origins (e.g. http://localhost:3000) whose requests are "
                        "served; any other Origin gets 403")
    clickhouse_max_query_bytes: int = Field(
        1024 * 1024, ge=1024, description="largest non-INSERT request body, decompressed")
    clickhouse_max_external_bytes: int = Field(
        256 * 1024 * 1024, ge=1024,
        description="largest external data of one request (its multipart files, decompressed)")
    clickhouse_max_sessions: int = Field(100, ge=1, description="HTTP sessions open at once")
    clickhouse_database: str = "default"
    clickhouse_table: str = "user_interactions"
    clickhouse_cluster: str = Field(
        "", description="a ClickHouse cluster's name: `python -m etar.warehouse.cluster` "
        "prints the replicated DDL for it (empty: one server, as the native stack)")
    clickhouse_retention_hours: int = Field(
        default_factory=resources.table_retention_hours, ge=1,
        description="TTL of minute partitions (default: the one in clickhouse_table_schema.sql)")

    # S3: versitygw (native stack: over a local folder; compose: its official image)
    s3_endpoint: str = "http://127.0.0.1:9000"
    s3_access_key: str = "etar"
    s3_secret_key: SecretStr = SecretStr("etar-secret-key")
    s3_region: str = "us-east-1"
    s3_bucket: str = "etar"

    # Spark (the pyspark distribution; local master by default, or spark://host:7077)
    spark_master: str = "local[2]"
    spark_driver_memory: str = "1g"
    spark_mode: Literal["connect", "submit"] = Field(
        "connect", description="connect: the warm Spark Connect server; submit: spark-submit")
    spark_connect_url: str = Field("sc://127.0.0.1:15002", description="Spark Connect server")
    spark_jars_dir: Path | None = Field(
        None, description="the S3A jars (images bake them); unset: <state>/lib/spark-s3a")

    # Dashboard: FastAPI API (reports in) and Streamlit UI (charts out)
    dashboard_api_url: str = "http://127.0.0.1:8000"
    dashboard_api_public_url: str | None = Field(
        None, description="the dashboard API as a browser reaches it, for the links to executed "
        "notebooks (compose: the host's published port); unset: dashboard_api_url")
    dashboard_token: SecretStr = SecretStr("etar-dashboard-token")
    dashboard_history: int = Field(120, ge=1, description="reports the API keeps in memory")
    dashboard_ui_port: int = Field(8501, ge=1, le=65535)
    dashboard_poll_seconds: float = Field(5.0, gt=0, description="UI refresh interval")

    # Sink (Kafka -> ClickHouse)
    sink_group_id: str = "etar-clickhouse-sink"
    sink_batch_rows: int = Field(20_000, ge=1, description="flush after this many rows")
    sink_batch_seconds: float = Field(1.0, gt=0, description="or after this long")
    sink_idle_flush_seconds: float = Field(
        0.25, gt=0, description="an idle inserter takes a batch this old already (latency)")
    sink_instance: str = Field(
        "", description="this sink's name within its group (the stack sets it per instance)")

    # Batch plane: when a minute is complete, how long to wait for it
    pipeline_lateness_seconds: float = Field(
        2.0, ge=0, description="messages sent this long after a minute's end still count")
    pipeline_sink_timeout_seconds: float = Field(
        180.0, gt=0, description="give up waiting for the sink to commit a minute")

    # Reconciliation: every minute with rows in ClickHouse ends with a report equal to it
    reconcile_grace_seconds: float = Field(
        30.0, ge=0, description="a minute is reconciled once its cut-off is this far past "
                                "(its scheduled run exists by then)")
    reconcile_max_redo: int = Field(
        3, ge=1, description="minutes the reconciliation redoes at once (runs in flight)")
    reconcile_retry_seconds: float = Field(
        600.0, ge=0, description="a minute whose redo run failed is tried again after this")
    reconcile_expire_batch: int = Field(
        500, ge=1, description="expired minute objects deleted per reconciliation")

    # Producer defaults
    producer_rate: float = Field(50.0, gt=0, description="events/s per process")
    producer_error_rate: float = Field(0.05, ge=0, le=1)

    # Airflow (native stack: Postgres + Redis + Celery) ------------------------------------
    postgres_port: int = Field(5433, ge=1, le=65535, description="the stack's own PostgreSQL")
    redis_port: int = Field(6380, ge=1, le=65535, description="the stack's own Redis (broker)")
    airflow_postgres_user: str = "airflow"
    airflow_postgres_password: SecretStr = SecretStr("airflow")
    airflow_postgres_db: str = "airflow"
    airflow_api_url: str = Field("http://127.0.0.1:8080", description="api-server (UI, REST)")
    airflow_admin_user: str = "admin"
    airflow_admin_password: SecretStr = SecretStr("admin")
    airflow_jwt_secret: SecretStr = Field(  # >= 64 bytes: Airflow signs with HS512
        SecretStr("etar-change-me-jwt-secret-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH"),
        description="[api_auth] jwt_secret, shared by every component")
    airflow_secret_key: SecretStr = Field(
        SecretStr("etar-change-me-api-secret-key"), description="[api] secret_key, shared")
    airflow_fernet_key: SecretStr = Field(
        SecretStr("dnOCZa6aBxg4FZ8vsNNb52zXjgH13frimo9AxJTF0Ys="),
        description="encrypts connection passwords in the metadata DB (Fernet key)")
    airflow_worker_concurrency: int = Field(2, ge=1, description="Celery worker slots")
    airflow_worker_log_port: int = Field(8793, ge=1, le=65535,
                                         description="the Celery worker's log server")
    airflow_triggerer_log_port: int = Field(8794, ge=1, le=65535,
                                            description="the triggerer's log server")
    airflow_dags_folder: Path | None = Field(
        None, description="the DAG files; unset: <project dir>/dags")

    # JupyterLab (the workbook: <project dir>/notebooks) -------------------------------------
    jupyter_port: int = Field(8888, ge=1, le=65535, description="JupyterLab's port")
    jupyter_token: SecretStr = Field(SecretStr("etar-jupyter-token"),
                                     description="JupyterLab's access token")

    @field_validator("spark_jars_dir", "airflow_dags_folder", "dashboard_api_public_url",
                     mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("state_dir", "project_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value if value.is_absolute() else (Path.cwd() / value).resolve()

    @model_validator(mode="after")
    def _cluster_bootstrap(self) -> Settings:
        """Cluster: clients bootstrap from every broker (one down is no obstacle), and Spark
        runs on the stack's standalone master unless another master is named."""
        if self.topology == "cluster" and "," not in self.kafka_bootstrap_servers:
            self.kafka_bootstrap_servers = ",".join(
                f"{host}:{port}" for _, host, port, _ in self.kafka_members)
        if self.topology == "cluster" and self.spark_master.startswith("local"):
            # the stack's standalone master (etar_stack.services.spark_cluster)
            self.spark_master = f"spark://{self.bind_host}:{self.spark_connect_port + 1}"
        return self

    def environ(self, *names: str) -> dict[str, str]:
        """``ETAR_*`` variables carrying these settings to a child process."""
        values = {name: getattr(self, name) for name in names}
        return {f"ETAR_{name.upper()}": str(value.get_secret_value() if isinstance(
            value, SecretStr) else value) for name, value in values.items()}

    @property
    def kafka_port(self) -> int:
        """Port of the broker listener in ``kafka_bootstrap_servers``."""
        return int(self.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)[1])

    @property
    def kafka_members(self) -> list[tuple[int, str, int, int]]:
        """(node id, host, broker port, controller port) of each broker the stack runs."""
        first = self.kafka_bootstrap_servers.split(",")[0]
        host, port = first.rsplit(":", 1)[0], int(first.rsplit(":", 1)[1])
        size = KAFKA_CLUSTER_SIZE if self.topology == "cluster" else 1
        step = self.kafka_member_port_step
        return [(n, host, port + step * (n - 1), self.kafka_controller_port + step * (n - 1))
                for n in range(1, size + 1)]

    @property
    def kafka_replication_factor(self) -> int:
        """Replicas of every topic etar creates (3 on the cluster topology)."""
        return min(3, len(self.kafka_members))

    @property
    def kafka_min_insync_replicas(self) -> int:
        """Replicas an ``acks=all`` write needs (2 of 3 on the cluster topology)."""
        return 2 if self.kafka_replication_factor >= 3 else 1

    @property
    def schema_registry_port(self) -> int:
        """Port of ``schema_registry_url``."""
        return urlsplit(self.schema_registry_url).port or 80

    @property
    def clickhouse_user_files(self) -> Path:
        """The only folder ``file()``, ``INTO OUTFILE`` and ``FROM INFILE`` may reach."""
        return self.state_dir / "data" / "clickhouse" / "user_files"

    @property
    def dashboard_links_url(self) -> str:
        """The base of the links a browser follows to the dashboard API."""
        return (self.dashboard_api_public_url or self.dashboard_api_url).rstrip("/")

    @property
    def notebook_runs_dir(self) -> Path:
        """Where the replay DAG keeps each minute's executed notebooks (``<stem>/``), and the
        dashboard API serves them from."""
        return self.state_dir / "airflow" / "runs"

    @property
    def s3_port(self) -> int:
        """Port of ``s3_endpoint``."""
        return urlsplit(self.s3_endpoint).port or 80

    @property
    def spark_connect_port(self) -> int:
        """Port of ``spark_connect_url``."""
        return urlsplit(self.spark_connect_url.replace("sc://", "http://", 1)).port or 15002

    @property
    def dashboard_api_port(self) -> int:
        """Port of ``dashboard_api_url``."""
        return urlsplit(self.dashboard_api_url).port or 80

    @property
    def s3a_jars_dir(self) -> Path:
        """hadoop-aws and its AWS SDK, as ``etar stack install`` resolved them (or baked)."""
        return self.spark_jars_dir or self.state_dir / "lib" / "spark-s3a"

    @property
    def dags_folder(self) -> Path:
        """Where Airflow reads the DAG files."""
        return self.airflow_dags_folder or self.project_dir / "dags"

    @property
    def airflow_api_port(self) -> int:
        """Port of ``airflow_api_url``."""
        return urlsplit(self.airflow_api_url).port or 80


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once.

    Besides ``./.env``, the ``.env`` of ``ETAR_PROJECT_DIR`` when that is set: notebook kernels
    run in ``notebooks/``, and the stack hands every process the project folder.
    """
    project = os.environ.get("ETAR_PROJECT_DIR")
    files = (Path(project) / ".env", Path(".env")) if project else (Path(".env"),)
    return Settings(_env_file=files)  # later files win
