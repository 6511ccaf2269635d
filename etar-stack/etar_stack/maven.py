"""Java dependencies of the native stack, resolved from Maven Central by committed poms."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

from etar.errors import StackError

log = logging.getLogger(__name__)

POMS = Path(__file__).parent / "poms"
"""One pom per set of jars: ``kafka.xml``, ``spark-s3a.xml``."""


def resolve(pom: Path, target: Path) -> Path:
    """Copy ``pom``'s runtime dependencies into ``target`` once (again when the pom changes)."""
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    marker = target / ".pom-sha256"
    if marker.exists() and marker.read_text() == digest:
        return target
    if shutil.which("mvn") is None:
        raise StackError(f"Maven (`mvn`) is needed to fetch the jars of {pom}; install it first")
    log.info("resolving %s from Maven Central into %s", pom.name, target)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    command = ["mvn", "-B", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={target}", "-DincludeScope=runtime"]
    if subprocess.run(command, check=False).returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        raise StackError(f"`mvn dependency:copy-dependencies` failed for {pom}; see above")
    marker.write_text(digest)
    return target
