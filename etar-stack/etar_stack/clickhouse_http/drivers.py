"""The official JDBC and Go drivers' check programs (``tests/drivers/``), built once.

``etar stack install`` builds them ahead (the jars from Maven Central by a committed pom,
the Go module from the module proxy) so the driver tests download nothing; each build is
cached under ``<state>/drivers`` by a hash of its sources and reruns only when they change.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

from etar.config import Settings
from etar.errors import StackError
from etar_stack import maven

log = logging.getLogger(__name__)

BUILD_TIMEOUT = 600
"""Seconds a cold build may take (the Go module compiles its dependencies once)."""


def sources(settings: Settings) -> Path:
    """The check programs' folder in the checkout."""
    return settings.project_dir / "tests" / "drivers"


def _digest(*files: Path) -> str:
    hasher = hashlib.sha256()
    for file in files:
        hasher.update(file.name.encode() + b"\0" + file.read_bytes())
    return hasher.hexdigest()[:16]


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise StackError(f"`{' '.join(command)}` took over {BUILD_TIMEOUT} s") from None
    if done.returncode != 0:
        raise StackError(f"`{' '.join(command)}` failed:\n{done.stdout}{done.stderr}")


def jdbc(settings: Settings) -> str:
    """The classpath running ``JdbcCheck`` (clickhouse-jdbc's jars and the compiled check)."""
    folder = sources(settings) / "jdbc"
    if shutil.which("javac") is None:
        raise StackError("a JDK (`javac`) is needed to build the JDBC driver check")
    jars = maven.resolve(folder / "pom.xml", settings.state_dir / "drivers" / "jdbc-jars")
    classes = settings.state_dir / "drivers" / f"jdbc-{_digest(folder / 'JdbcCheck.java')}"
    if not (classes / "JdbcCheck.class").exists():
        log.info("compiling the JDBC driver check into %s", classes)
        shutil.rmtree(classes, ignore_errors=True)
        classes.mkdir(parents=True)
        try:
            _run(["javac", "-d", str(classes), "-cp", f"{jars}/*",
                  str(folder / "JdbcCheck.java")], folder)
        except StackError:
            shutil.rmtree(classes, ignore_errors=True)
            raise
    return f"{classes}{os.pathsep}{jars}/*"


def go(settings: Settings) -> Path:
    """The built ``chgo`` binary (clickhouse-go over HTTP)."""
    folder = sources(settings) / "go"
    if shutil.which("go") is None:
        raise StackError("Go (`go`) is needed to build the Go driver check")
    binary = settings.state_dir / "drivers" / (
        f"chgo-{_digest(folder / 'go.mod', folder / 'go.sum', folder / 'main.go')}")
    if not binary.exists():
        log.info("building the Go driver check into %s", binary)
        binary.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local"}
        _run(["go", "build", "-o", f"{binary}.tmp", "."], folder, env)
        Path(f"{binary}.tmp").rename(binary)
    return binary


def install(settings: Settings) -> None:
    """Build both checks where their toolchains and sources are (a checkout, not a wheel)."""
    if not sources(settings).is_dir():
        return
    for name, build, tool in (("JDBC", jdbc, "javac"), ("Go", go, "go")):
        if shutil.which(tool) is None:
            log.warning("no `%s`: the %s driver tests will skip", tool, name)
            continue
        build(settings)
