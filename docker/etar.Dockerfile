# syntax=docker/dockerfile:1.7
# etar's image: the locked Python environment, Java for Spark, the S3A jars baked in.
# Runs dashboard-api, dashboard-ui, jupyter, producer, spark-master, spark-worker and the
# one-shot clickhouse-init / s3-init.

# --- hadoop-aws + AWS SDK at pyspark's Hadoop version, from the same pom as the native stack
FROM maven:3.9.9-eclipse-temurin-17 AS s3a-jars
COPY etar-stack/etar_stack/poms/spark-s3a.xml /build/pom.xml
RUN mvn -B -q -f /build/pom.xml dependency:copy-dependencies \
        -DoutputDirectory=/jars -DincludeScope=runtime

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# --- the environment from uv.lock (dependencies first, for layer caching)
FROM python:3.11.11-slim-bookworm AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PROJECT_ENVIRONMENT=/opt/etar/.venv UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never UV_PYTHON=3.11
WORKDIR /opt/etar
# etar with the extras of its services (Spark, the dashboard, the workbook): no Airflow and no
# embedded stack (etar-stack: only its pyproject.toml, which the workspace's lock names).
COPY pyproject.toml uv.lock README.md ./
COPY etar-stack/pyproject.toml etar-stack/
RUN uv sync --frozen --no-dev --no-install-workspace --extra spark --extra dashboard --extra workbook
COPY etar etar
COPY spark spark
COPY dashboard dashboard
COPY --chown=10001 notebooks notebooks
RUN uv sync --frozen --no-dev --extra spark --extra dashboard --extra workbook
COPY --from=s3a-jars /jars /opt/etar/jars
RUN useradd --uid 10001 --create-home etar && mkdir -p /var/lib/etar && chown etar /var/lib/etar
USER etar
# SPARK_HOME is root-owned: spark-worker keeps its scratch under /var/lib/etar (compose sets
# SPARK_WORKER_DIR); ETAR_PROJECT_DIR: where the notebooks are.
ENV PATH=/opt/etar/.venv/bin:$PATH \
    SPARK_HOME=/opt/etar/.venv/lib/python3.11/site-packages/pyspark \
    ETAR_PROJECT_DIR=/opt/etar \
    ETAR_STATE_DIR=/var/lib/etar \
    ETAR_SPARK_JARS_DIR=/opt/etar/jars \
    ETAR_BIND_HOST=0.0.0.0
ENTRYPOINT ["tini", "--"]
CMD ["etar", "--help"]
