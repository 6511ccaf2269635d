"""The S3A jars for Spark, resolved by ``etar stack install`` ahead of any job.

hadoop-aws must be exactly the Hadoop inside pyspark (``jars/hadoop-client-api-<v>.jar``),
with the AWS SDK it was built against; ``etar-stack/etar_stack/poms/spark-s3a.xml`` pins both, and
:func:`check_hadoop_version` refuses a mismatch up front instead of a NoSuchMethodError in a
job.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyspark

from etar.analysis.submit import spark_home
from etar.config import Settings
from etar.errors import StackError
from etar_stack import maven

POM = maven.POMS / "spark-s3a.xml"


def pyspark_hadoop_version() -> str:
    """The Hadoop version bundled with the installed pyspark."""
    for jar in (spark_home() / "jars").glob("hadoop-client-api-*.jar"):
        return jar.name.removeprefix("hadoop-client-api-").removesuffix(".jar")
    raise StackError(f"no hadoop-client-api jar in {spark_home() / 'jars'}")


def pom_hadoop_version() -> str:
    match = re.search(r"<hadoop.version>([^<]+)</hadoop.version>", POM.read_text())
    if not match:
        raise StackError(f"{POM} does not pin hadoop.version")
    return match.group(1)


def check_hadoop_version() -> None:
    """Fail with the fix when hadoop-aws would not match pyspark's Hadoop."""
    bundled, pinned = pyspark_hadoop_version(), pom_hadoop_version()
    if bundled != pinned:
        raise StackError(f"pyspark {pyspark.__version__} bundles Hadoop {bundled} but {POM} "
                         f"pins hadoop-aws {pinned}; set hadoop.version to {bundled}")


def install(settings: Settings) -> list[Path]:
    """Resolve hadoop-aws + AWS SDK once into ``settings.s3a_jars_dir``; the jars.

    An image that baked them in names their folder in ``ETAR_SPARK_JARS_DIR`` instead.
    """
    check_hadoop_version()
    if settings.spark_jars_dir is not None:
        jars = sorted(settings.spark_jars_dir.glob("*.jar"))
        if not any(jar.name.startswith("hadoop-aws-") for jar in jars):
            raise StackError(f"no hadoop-aws jar in ETAR_SPARK_JARS_DIR={settings.spark_jars_dir}")
        return jars
    folder = maven.resolve(POM, settings.s3a_jars_dir)
    return sorted(folder.glob("*.jar"))
