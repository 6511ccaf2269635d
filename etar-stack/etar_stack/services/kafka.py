"""Apache Kafka in KRaft mode for the native stack: one combined broker + controller, or on
the cluster topology three of them (a 3-voter quorum, every topic replicated 3 times).

The jars come from Maven Central through ``etar-stack/etar_stack/poms/kafka.xml``
(``mvn dependency:copy-dependencies``) and are cached under ``<state>/lib/kafka`` until the
pom changes. The storage is formatted once; the broker is ready when it answers a metadata
request. Cluster members start one after the other, but a quorum needs two voters: the first
ones count as started once their controller listens, the last one once every broker is in
the metadata (then the topics are created).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path

from etar.config import Settings
from etar.errors import StackError
from etar.topics import admin, create_topics
from etar_stack import maven
from etar_stack.supervisor import Service, port_open

log = logging.getLogger(__name__)

POM = maven.POMS / "kafka.xml"

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = %d{ISO8601} %-5p [%c{1}] %m%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def lib_dir(settings: Settings) -> Path:
    """Where the Kafka jars are cached."""
    return settings.state_dir / "lib" / "kafka"


def classpath(settings: Settings) -> str:
    """``java -cp`` value covering every Kafka jar."""
    return str(lib_dir(settings) / "*")


def install(settings: Settings) -> Path:
    """Resolve the Kafka jars from Maven Central once (again only when the pom changes)."""
    return maven.resolve(POM, lib_dir(settings))


def _java_command(settings: Settings, main: str, *args: str, heap: str = "256m",
                  conf: str = "kafka") -> list[str]:
    log4j = settings.state_dir / conf / "log4j2.properties"
    return ["java", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath(settings), main, *args]


def member_name(settings: Settings, node: int) -> str:
    """The service name of broker ``node``: ``kafka`` alone, ``kafka-<n>`` in a cluster."""
    return "kafka" if len(settings.kafka_members) == 1 else f"kafka-{node}"


def _server_properties(settings: Settings, node: int) -> str:
    members = settings.kafka_members
    _, host, port, controller = members[node - 1]
    name = member_name(settings, node)
    data = settings.state_dir / "data" / name
    replicas, min_isr = settings.kafka_replication_factor, settings.kafka_min_insync_replicas
    voters = ",".join(f"{n}@{h}:{c}" for n, h, _, c in members)
    cluster = [
        f"default.replication.factor={replicas}",
        f"min.insync.replicas={min_isr}",
        "unclean.leader.election.enable=false",
    ] if len(members) > 1 else []
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node}",
        f"controller.quorum.voters={voters}",
        f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}",
        f"advertised.listeners=PLAINTEXT://{host}:{port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={data}",
        f"num.partitions={settings.kafka_topic_partitions}",
        "auto.create.topics.enable=false",
        f"offsets.topic.replication.factor={replicas}",
        "offsets.topic.num.partitions=10",
        f"transaction.state.log.replication.factor={replicas}",
        f"transaction.state.log.min.isr={min_isr}",
        f"share.coordinator.state.topic.replication.factor={replicas}",
        f"share.coordinator.state.topic.min.isr={min_isr}",
        *cluster,
        "group.initial.rebalance.delay.ms=0",
        "log.retention.hours=24",
        "",
    ])


def prepare(settings: Settings, node: int = 1) -> None:
    """Install the jars, write the configuration and format the storage if it is new."""
    from etar.security import refuse_unauthenticated_bind

    refuse_unauthenticated_bind(settings, settings.bind_host, "Kafka (PLAINTEXT listeners)")
    install(settings)
    name = member_name(settings, node)
    conf_dir = settings.state_dir / name
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "log4j2.properties").write_text(_LOG4J2)
    properties = conf_dir / "server.properties"
    properties.write_text(_server_properties(settings, node))
    data = settings.state_dir / "data" / name
    if (data / "meta.properties").exists():
        return
    log.info("formatting KRaft storage in %s", data)
    command = _java_command(settings, "kafka.tools.StorageTool", "format", "--ignore-formatted",
                            "-t", settings.kafka_cluster_id, "-c", str(properties), conf=name)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


def ready(settings: Settings) -> bool:
    """The broker answers a metadata request and names itself."""
    metadata = admin(settings).list_topics(timeout=2)
    return bool(metadata.brokers)


def member_ready(settings: Settings, node: int) -> bool:
    """Broker ``node`` itself answers a metadata request that lists it."""
    _, host, port, _ = settings.kafka_members[node - 1]
    metadata = admin(settings, bootstrap=f"{host}:{port}").list_topics(timeout=2)
    return node in metadata.brokers


def cluster_ready(settings: Settings) -> bool:
    """Every broker is in the metadata."""
    metadata = admin(settings).list_topics(timeout=2)
    return len(metadata.brokers) == len(settings.kafka_members)


def leaders(settings: Settings, topic: str) -> dict[int, int]:
    """Event partitions each broker leads (node id → count)."""
    metadata = admin(settings).list_topics(topic, timeout=5)
    counts: dict[int, int] = {}
    for partition in metadata.topics[topic].partitions.values():
        counts[partition.leader] = counts.get(partition.leader, 0) + 1
    return counts


def _describe_member(settings: Settings, node: int) -> str:
    metadata = admin(settings).list_topics(settings.kafka_topic, timeout=5)
    partitions = metadata.topics[settings.kafka_topic].partitions.values()
    led = sum(1 for p in partitions if p.leader == node)
    short = sum(1 for p in partitions if len(p.isrs) < len(p.replicas))
    return (f"node {node}: leads {led}/{len(partitions)} partitions of "
            f"{settings.kafka_topic}; under-replicated: {short}")


def service(settings: Settings) -> Service:
    """The broker as a supervised service (the first member on the cluster topology)."""
    return services(settings)[0]


def services(settings: Settings) -> list[Service]:
    """One supervised service per broker."""
    members = settings.kafka_members
    if len(members) == 1:
        properties = settings.state_dir / "kafka" / "server.properties"
        return [Service(
            name="kafka",
            command=_java_command(settings, "kafka.Kafka", str(properties),
                                  heap=settings.kafka_heap),
            port=settings.kafka_port,
            url=f"PLAINTEXT://{settings.kafka_bootstrap_servers}",
            ready=lambda: ready(settings),
            prepare=lambda: prepare(settings),
            after_start=lambda: create_topics(settings),
            start_timeout=120,
        )]
    result = []
    for node, host, port, controller in members:
        name = member_name(settings, node)
        properties = settings.state_dir / name / "server.properties"
        last = node == members[-1][0]
        result.append(Service(
            name=name,
            command=_java_command(settings, "kafka.Kafka", str(properties),
                                  heap=settings.kafka_cluster_heap, conf=name),
            port=port,
            url=f"PLAINTEXT://{host}:{port} (controller {controller})",
            ready=_member_probe(settings, node, last),
            prepare=partial(prepare, settings, node),
            after_start=partial(create_topics, settings) if last else None,
            describe=partial(_describe_member, settings, node),
            start_timeout=180,
        ))
    return result


def _member_probe(settings: Settings, node: int, last: bool) -> Callable[[], bool]:
    """Readiness of a cluster member: it answers and lists itself; while the quorum forms
    (the earlier members, before the last one has started) its controller listening counts."""
    _, host, _, controller = settings.kafka_members[node - 1]

    def probe() -> bool:
        with contextlib.suppress(Exception):
            if member_ready(settings, node):
                return True
        if last:
            return False
        forming = not any(port_open(h, c) for n, h, _, c in settings.kafka_members
                          if n > node)
        return forming and port_open(host, controller)

    def probe_last() -> bool:
        return member_ready(settings, node) and cluster_ready(settings)

    return probe_last if last else probe


def perf_test_command(settings: Settings, *args: str) -> list[str]:
    """Kafka's own ``ProducerPerformance`` tool (from kafka-tools) with our classpath."""
    return _java_command(settings, "org.apache.kafka.tools.ProducerPerformance", *args)
