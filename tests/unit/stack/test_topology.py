"""The cluster topology: its members, their ports and configuration, the default unchanged."""

from __future__ import annotations

from pathlib import Path

from etar.config import Settings
from etar.sink.consumer import progress_path
from etar_stack import all_services, selected_services
from etar_stack.services import kafka


def _settings(topology: str, tmp: Path) -> Settings:
    return Settings(_env_file=None, topology=topology, state_dir=tmp,  # type: ignore[arg-type]
                    kafka_bootstrap_servers="127.0.0.1:19092", kafka_controller_port=19093)


def test_single_topology_is_one_broker_and_one_sink(tmp_path: Path) -> None:
    settings = _settings("single", tmp_path)
    names = [s.name for s in all_services(settings)]
    assert names.count("kafka") == 1 and names.count("sink") == 1
    assert not [n for n in names if n.startswith(("kafka-", "sink-"))]
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092"
    text = kafka._server_properties(settings, 1)
    assert "controller.quorum.voters=1@127.0.0.1:19093" in text
    assert "offsets.topic.replication.factor=1" in text
    assert "min.insync.replicas" not in text.replace("state.log.min.isr", "")
    assert f"log.dirs={tmp_path / 'data' / 'kafka'}" in text


def test_cluster_members_shift_ports_from_the_offset_settings(tmp_path: Path) -> None:
    settings = _settings("cluster", tmp_path)
    assert settings.kafka_members == [(1, "127.0.0.1", 19092, 19093),
                                      (2, "127.0.0.1", 19192, 19193),
                                      (3, "127.0.0.1", 19292, 19293)]
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19192,127.0.0.1:19292"
    assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == (3, 2)
    names = [s.name for s in all_services(settings)]
    assert names[:3] == ["kafka-1", "kafka-2", "kafka-3"]
    assert "sink-1" in names and "sink-2" in names and "sink" not in names


def test_cluster_broker_configuration(tmp_path: Path) -> None:
    settings = _settings("cluster", tmp_path)
    text = kafka._server_properties(settings, 2)
    for line in ("node.id=2",
                 "controller.quorum.voters=1@127.0.0.1:19093,2@127.0.0.1:19193,"
                 "3@127.0.0.1:19293",
                 "listeners=PLAINTEXT://127.0.0.1:19192,CONTROLLER://127.0.0.1:19193",
                 "offsets.topic.replication.factor=3", "transaction.state.log.min.isr=2",
                 "default.replication.factor=3", "min.insync.replicas=2",
                 "unclean.leader.election.enable=false", f"log.dirs={tmp_path}/data/kafka-2"):
        assert line in text.splitlines(), line


def test_a_group_name_selects_every_member(tmp_path: Path) -> None:
    settings = _settings("cluster", tmp_path).model_copy(
        update={"stack_services": "kafka,sink"})
    assert [s.name for s in selected_services(settings)] == [
        "kafka-1", "kafka-2", "kafka-3", "sink-1", "sink-2"]


def test_each_sink_instance_reports_to_its_own_file(tmp_path: Path) -> None:
    settings = _settings("cluster", tmp_path)
    paths = {progress_path(settings.model_copy(update={"sink_instance": n})) for n in "12"}
    assert len(paths) == 2 and progress_path(settings) not in paths
    services = {s.name: s for s in all_services(settings)}
    assert services["sink-1"].env == {"ETAR_SINK_INSTANCE": "1"}
    assert services["sink-2"].env == {"ETAR_SINK_INSTANCE": "2"}


def test_cluster_runs_two_celery_workers_named_apart(tmp_path: Path) -> None:
    single = {s.name: s for s in all_services(_settings("single", tmp_path))}
    assert "--celery-hostname" not in single["airflow-worker"].command
    assert not [n for n in single if n.startswith("airflow-worker-")]
    services = {s.name: s for s in all_services(_settings("cluster", tmp_path))}
    assert "airflow-worker" not in services
    for n in (1, 2):
        command = services[f"airflow-worker-{n}"].command
        assert command[command.index("--celery-hostname") + 1] == f"etar-worker-{n}@%h"
        assert "--skip-serve-logs" in command  # no log-server port shared by the two


def test_cluster_runs_spark_standalone_on_ports_shifted_with_spark_connect(
        tmp_path: Path) -> None:
    single = _settings("single", tmp_path).model_copy(
        update={"spark_connect_url": "sc://127.0.0.1:25002"})
    assert single.spark_master == "local[2]"
    assert not [s for s in all_services(single) if s.name.startswith("spark-")
                and s.name != "spark-connect"]
    settings = Settings(_env_file=None, topology="cluster", state_dir=tmp_path,  # type: ignore[arg-type]
                        spark_connect_url="sc://127.0.0.1:25002", s3_secret_key="s3-secret")
    assert settings.spark_master == "spark://127.0.0.1:25003"
    services = {s.name: s for s in all_services(settings)}
    master = services["spark-master"]
    assert master.command[-6:] == ["--host", "127.0.0.1", "--port", "25003",
                                   "--webui-port", "25004"]
    for n, ui in ((1, "25005"), (2, "25006")):
        worker = services[f"spark-worker-{n}"]
        assert worker.command[2] == "spark://127.0.0.1:25003"
        assert worker.command[worker.command.index("--webui-port") + 1] == ui
        assert "s3-secret" not in " ".join(worker.command)
        assert worker.env["AWS_SECRET_ACCESS_KEY"] == "s3-secret"  # executors inherit it
    # the Spark Connect server, when it runs, attaches to the same master
    assert "spark://127.0.0.1:25003" in services["spark-connect"].command
