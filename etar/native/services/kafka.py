"""Apache Kafka in KRaft mode (one combined broker + controller) for the native stack.

The jars come from Maven Central through ``etar/native/poms/kafka.xml``
(``mvn dependency:copy-dependencies``) and are cached under ``<state>/lib/kafka`` until the
pom changes. The storage is formatted once; the broker is ready when it answers a metadata
request.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from etar.config import Settings
from etar.errors import StackError
from etar.native import maven
from etar.native.supervisor import Service
from etar.topics import admin, create_topics

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


def _java_command(settings: Settings, main: str, *args: str, heap: str = "256m") -> list[str]:
    log4j = settings.state_dir / "kafka" / "log4j2.properties"
    return ["java", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath(settings), main, *args]


def _server_properties(settings: Settings) -> str:
    host, port = settings.bind_host, settings.kafka_port
    controller = settings.kafka_controller_port
    data = settings.state_dir / "data" / "kafka"
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{host}:{controller}",
        f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}",
        f"advertised.listeners=PLAINTEXT://{host}:{port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={data}",
        f"num.partitions={settings.kafka_topic_partitions}",
        "auto.create.topics.enable=false",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=10",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "log.retention.hours=24",
        "",
    ])


def prepare(settings: Settings) -> None:
    """Install the jars, write the configuration and format the storage if it is new."""
    from etar.security import refuse_unauthenticated_bind

    refuse_unauthenticated_bind(settings, settings.bind_host, "Kafka (PLAINTEXT listeners)")
    install(settings)
    conf_dir = settings.state_dir / "kafka"
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "log4j2.properties").write_text(_LOG4J2)
    properties = conf_dir / "server.properties"
    properties.write_text(_server_properties(settings))
    data = settings.state_dir / "data" / "kafka"
    if (data / "meta.properties").exists():
        return
    log.info("formatting KRaft storage in %s", data)
    command = _java_command(settings, "kafka.tools.StorageTool", "format", "--ignore-formatted",
                            "-t", settings.kafka_cluster_id, "-c", str(properties))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


def ready(settings: Settings) -> bool:
    """The broker answers a metadata request and names itself."""
    metadata = admin(settings).list_topics(timeout=2)
    return bool(metadata.brokers)


def service(settings: Settings) -> Service:
    """The broker as a supervised service."""
    properties = settings.state_dir / "kafka" / "server.properties"
    return Service(
        name="kafka",
        command=_java_command(settings, "kafka.Kafka", str(properties), heap=settings.kafka_heap),
        port=settings.kafka_port,
        url=f"PLAINTEXT://{settings.kafka_bootstrap_servers}",
        ready=lambda: ready(settings),
        prepare=lambda: prepare(settings),
        after_start=lambda: create_topics(settings),
        start_timeout=120,
    )


def perf_test_command(settings: Settings, *args: str) -> list[str]:
    """Kafka's own ``ProducerPerformance`` tool (from kafka-tools) with our classpath."""
    return _java_command(settings, "org.apache.kafka.tools.ProducerPerformance", *args)
