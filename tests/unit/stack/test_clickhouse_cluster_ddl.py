"""The replicated DDL for a ClickHouse cluster: keyed like the native table, parsed by chdb."""

from __future__ import annotations

import pytest

from etar.config import Settings
from etar.errors import ConfigError
from etar.warehouse.cluster import cluster_ddl
from etar.warehouse.table import DEDUPLICATION_WINDOW, table_ddl
from etar_stack.clickhouse_http.engine import Engine


def _settings(cluster: str = "etar") -> Settings:
    return Settings(_env_file=None, clickhouse_cluster=cluster,  # type: ignore[call-arg]
                    clickhouse_table="events", clickhouse_retention_hours=48)


def test_replicated_table_keeps_the_native_key_and_dedup_window() -> None:
    local, distributed = cluster_ddl(_settings())
    assert local.startswith("CREATE TABLE IF NOT EXISTS `events_local` ON CLUSTER `etar`")
    assert ("ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/"
            "events_local', '{replica}')") in local
    native = table_ddl(_settings())
    for line in ("PARTITION BY event_minute", "ORDER BY (event_type, status, event_id)",
                 "TTL event_minute + toIntervalHour(48) DELETE",
                 "event_minute  DateTime('UTC') MATERIALIZED toStartOfMinute(event_ts)"):
        assert line in native and line in local
    assert f"replicated_deduplication_window = {DEDUPLICATION_WINDOW}," in local
    assert "non_replicated" not in local
    assert distributed == (
        "CREATE TABLE IF NOT EXISTS `events` ON CLUSTER `etar` AS `events_local`\n"
        "ENGINE = Distributed('etar', currentDatabase(), 'events_local', cityHash64(event_id))")


def test_without_a_cluster_name_it_says_which_setting() -> None:
    with pytest.raises(ConfigError, match="ETAR_CLICKHOUSE_CLUSTER"):
        cluster_ddl(_settings(""))


def test_clickhouse_parses_each_statement(engine: Engine) -> None:
    for statement in cluster_ddl(_settings()):
        ast = engine.execute(f"EXPLAIN AST {statement}", "TSV").body.read().decode()
        assert "CreateQuery" in ast
    assert "ReplicatedReplacingMergeTree" in engine.execute(
        f"EXPLAIN AST {cluster_ddl(_settings())[0]}", "TSV").body.read().decode()
