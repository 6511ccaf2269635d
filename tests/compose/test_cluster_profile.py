"""The compose file's `cluster` profile: ClickHouse Keeper, two replicas of the cluster `etar`
and the replicated DDL of etar/warehouse/cluster.py applied to them (static: no Docker here)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import yaml

from etar.config import Settings
from etar.warehouse.cluster import cluster_ddl
from tests.compose.test_static import COMPOSE, REPO_ROOT

PROFILE = {"clickhouse-keeper", "clickhouse-replica-1", "clickhouse-replica-2",
           "clickhouse-cluster-init"}
CONFIG = REPO_ROOT / "docker" / "clickhouse" / "cluster"


def _raw(name: str) -> dict[str, Any]:
    """The service as written (anchors merged): volumes, commands, healthchecks."""
    service: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"][name]
    return service


def _mounted(name: str, target: str) -> str:
    found = [v.split(":")[0] for v in _raw(name)["volumes"] if v.split(":")[1] == target]
    assert found, f"nothing mounted at {target} in {name}"
    return str(found[0])


def test_the_profile_holds_keeper_two_replicas_and_the_init(project: dict[str, Any]) -> None:
    for name in PROFILE:
        assert project[name]["profiles"] == ["cluster"], name
    assert "profiles" not in project["clickhouse"] or not project["clickhouse"]["profiles"]
    replicas = {project[f"clickhouse-replica-{n}"]["environment"]["CLICKHOUSE_REPLICA"]
                for n in (1, 2)}
    assert replicas == {"replica-1", "replica-2"}
    for n in (1, 2):
        replica = project[f"clickhouse-replica-{n}"]
        assert replica["depends_on"] == {"clickhouse-keeper": "service_healthy"}
        assert _mounted(f"clickhouse-replica-{n}", "/var/lib/clickhouse") == (
            f"clickhouse-replica-{n}-data")
        assert _mounted(f"clickhouse-replica-{n}", "/etc/clickhouse-server/config.d/"
                        "etar-cluster.xml") == "./docker/clickhouse/cluster/replica.xml"
    init = project["clickhouse-cluster-init"]
    assert init["environment"]["ETAR_CLICKHOUSE_CLUSTER"] == "etar"
    assert init["environment"]["ETAR_CLICKHOUSE_HOST"] == "clickhouse-replica-1"
    assert "cluster.apply" in " ".join(_raw("clickhouse-cluster-init")["command"])


def test_the_replica_config_names_the_cluster_keeper_and_macros() -> None:
    root = ET.parse(CONFIG / "replica.xml").getroot()
    hosts = [r.findtext("host") for r in root.iterfind("remote_servers/etar/shard/replica")]
    assert hosts == ["clickhouse-replica-1", "clickhouse-replica-2"]
    assert root.findtext("zookeeper/node/host") == "clickhouse-keeper"
    assert root.findtext("zookeeper/node/port") == "9181"
    macros = root.find("macros")
    assert macros is not None and macros.findtext("shard")
    replica = macros.find("replica")
    assert replica is not None and replica.get("from_env") == "CLICKHOUSE_REPLICA"
    keeper = ET.parse(CONFIG / "keeper.xml").getroot()
    assert keeper.findtext("keeper_server/tcp_port") == "9181"
    assert keeper.findtext("keeper_server/http_control/port") == "9182"
    assert _mounted("clickhouse-keeper", "/etc/clickhouse-keeper/keeper.xml") == (
        "./docker/clickhouse/cluster/keeper.xml")
    assert "9182/ready" in " ".join(_raw("clickhouse-keeper")["healthcheck"]["test"])


def test_the_ddl_uses_the_macros_the_replicas_define() -> None:
    local, distributed = cluster_ddl(Settings(_env_file=None, clickhouse_cluster="etar"))
    assert "ON CLUSTER `etar`" in local and "'{shard}'" not in local
    assert "{shard}" in local and "'{replica}'" in local
    assert "Distributed('etar'" in distributed
