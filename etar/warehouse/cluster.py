"""The table's DDL for a ClickHouse cluster (``ETAR_CLICKHOUSE_CLUSTER``), prepared, not run.

chdb has no cluster mode, so the native stack keeps one ``ReplacingMergeTree``; a user whose
ClickHouse is a cluster (Keeper + replicas, named in ``remote_servers``) applies this text:

* ``<table>_local`` on every node: ``ReplicatedReplacingMergeTree`` with the same columns,
  partitioning, key and TTL as ``clickhouse_table_schema.sql``, and
  ``replicated_deduplication_window`` as large as the native table's window, so a block the
  sink replays with its deduplication token is dropped by the replicas as it is today;
* ``<table>``: ``Distributed`` over it, sharded by ``cityHash64(event_id)`` (one event always
  on the same shard, where the ReplacingMergeTree can collapse a replay). The sink inserts
  into it with ``distributed_foreground_insert = 1`` (:data:`SINK_INSERT_SETTINGS`): an insert
  is acknowledged, and its offsets committed, only once every shard has its part.
"""

from __future__ import annotations

from etar.config import Settings
from etar.errors import ConfigError
from etar.warehouse.table import DEDUPLICATION_WINDOW, table_ddl

DEDUPLICATION_WINDOW_SECONDS = 24 * 3600
"""How long replicas remember a block's token (a replay comes within minutes; a day of room)."""
SINK_INSERT_SETTINGS = {"distributed_foreground_insert": "1", "insert_deduplicate": "1"}
"""What the sink's inserts add on a cluster: the Distributed insert waits for every shard."""


def _replace(text: str, old: str, new: str) -> str:
    if old not in text:
        raise ConfigError(f"the table schema no longer contains {old!r}; update "
                          "etar/warehouse/cluster.py with it")
    return text.replace(old, new, 1)


def cluster_ddl(settings: Settings) -> list[str]:
    """The statements, in order, creating the replicated table and its Distributed front."""
    cluster = settings.clickhouse_cluster
    if not cluster:
        raise ConfigError("set ETAR_CLICKHOUSE_CLUSTER to the cluster's name in remote_servers")
    table = settings.clickhouse_table
    local = f"{table}_local"
    ddl = _replace(table_ddl(settings).rstrip(";"), f"CREATE TABLE IF NOT EXISTS `{table}`",
                   f"CREATE TABLE IF NOT EXISTS `{local}` ON CLUSTER `{cluster}`")
    ddl = _replace(ddl, "ENGINE = ReplacingMergeTree\n",
                   "ENGINE = ReplicatedReplacingMergeTree("
                   f"'/clickhouse/tables/{{shard}}/{{database}}/{local}', '{{replica}}')\n")
    ddl = _replace(ddl, f"non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}",
                   f"replicated_deduplication_window = {DEDUPLICATION_WINDOW},\n"
                   f"         replicated_deduplication_window_seconds = "
                   f"{DEDUPLICATION_WINDOW_SECONDS}")
    distributed = (f"CREATE TABLE IF NOT EXISTS `{table}` ON CLUSTER `{cluster}` AS `{local}`\n"
                   f"ENGINE = Distributed('{cluster}', currentDatabase(), '{local}', "
                   "cityHash64(event_id))")
    return [ddl, distributed]


def apply(settings: Settings) -> None:
    """Run the statements against ``ETAR_CLICKHOUSE_HOST`` (a replica of the cluster; the
    ``ON CLUSTER`` DDL reaches the others through Keeper). Idempotent."""
    from etar.warehouse.table import client

    ch = client(settings)
    for statement in cluster_ddl(settings):
        ch.command(statement)


def main() -> None:
    """Print the statements (``python -m etar.warehouse.cluster``)."""
    from etar.config import get_settings

    print(";\n\n".join(cluster_ddl(get_settings())) + ";")


if __name__ == "__main__":
    main()
