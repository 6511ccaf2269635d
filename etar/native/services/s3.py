"""S3 for the native stack: S3Proxy (Maven Central) serving a local folder.

S3Proxy was picked over versitygw because one service then covers both clients etar uses:
the ``minio`` Python client and Spark's S3A connector (AWS SDK v2, path-style, SigV4) work
against it unchanged, and it is installed the same way as Kafka (a pom resolved by Maven),
with nothing to compile. Objects live under ``<state>/data/s3/<bucket>/``.
"""

from __future__ import annotations

from pathlib import Path

from etar.config import Settings
from etar.native import maven
from etar.native.supervisor import Service

POM = maven.POMS / "s3proxy.xml"

_LOGBACK = """<configuration>
  <appender name="out" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{ISO8601} %-5level [%logger{0}] %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="out"/></root>
  <logger name="org.gaul.shaded" level="WARN"/>
</configuration>
"""


def lib_dir(settings: Settings) -> Path:
    return settings.state_dir / "lib" / "s3proxy"


def install(settings: Settings) -> Path:
    """Resolve S3Proxy and its dependencies once."""
    return maven.resolve(POM, lib_dir(settings))


def prepare(settings: Settings) -> None:
    """Install, then write the S3Proxy properties (credentials from settings) and log config."""
    install(settings)
    conf = settings.state_dir / "s3proxy"
    conf.mkdir(parents=True, exist_ok=True)
    data = settings.state_dir / "data" / "s3"
    data.mkdir(parents=True, exist_ok=True)
    (conf / "logback.xml").write_text(_LOGBACK)
    properties = conf / "s3proxy.conf"
    properties.write_text("\n".join([
        f"s3proxy.endpoint=http://{settings.bind_host}:{settings.s3_port}",
        "s3proxy.authorization=aws-v2-or-v4",
        f"s3proxy.identity={settings.s3_access_key}",
        f"s3proxy.credential={settings.s3_secret_key.get_secret_value()}",
        "jclouds.provider=filesystem-nio2",
        f"jclouds.filesystem.basedir={data}",
        "",
    ]))
    properties.chmod(0o600)


def ready(settings: Settings) -> bool:
    """S3Proxy answers an authenticated request."""
    from etar import storage

    storage.client(settings).list_buckets()
    return True


def service(settings: Settings) -> Service:
    conf = settings.state_dir / "s3proxy"
    from etar import storage

    return Service(
        name="s3",
        command=["java", "-Xmx384m", f"-Dlogback.configurationFile={conf / 'logback.xml'}",
                 "-cp", str(lib_dir(settings) / "*"), "org.gaul.s3proxy.Main",
                 "--properties", str(conf / "s3proxy.conf")],
        port=settings.s3_port,
        url=f"{settings.s3_endpoint} (bucket {settings.s3_bucket})",
        ready=lambda: ready(settings),
        prepare=lambda: prepare(settings),
        after_start=lambda: storage.ensure_bucket(settings),
        start_timeout=90,
    )
