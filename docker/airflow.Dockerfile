# syntax=docker/dockerfile:1.7
# Airflow 3 with etar: the DAG imports the etar package and runs spark-submit against the
# spark-master service, so the image carries Java, etar's locked environment (Airflow itself,
# the providers, the full pyspark at the cluster's version) and the S3A jars.
# The environment is uv.lock installed by uv, exactly as in etar.Dockerfile: uv applies the
# project's override-dependencies, so the Spark provider's pyspark-client (Spark Connect only,
# installed into the same pyspark/ folder) never clobbers the full pyspark; pip would.
FROM maven:3.9.9-eclipse-temurin-17 AS s3a-jars
COPY etar-stack/etar_stack/poms/spark-s3a.xml /build/pom.xml
RUN mvn -B -q -f /build/pom.xml dependency:copy-dependencies \
        -DoutputDirectory=/jars -DincludeScope=runtime

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM apache/airflow:3.3.2-python3.11
USER root
# the distribution's default JRE (17 or 21): Spark 4 runs on either
RUN apt-get update \
    && apt-get install -y --no-install-recommends default-jre-headless \
    && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /usr/local/bin/uv
COPY --from=s3a-jars /jars /opt/etar/jars
# The image's Python 3.11; the venv's `airflow` (the locked version) comes first on PATH.
ENV UV_PROJECT_ENVIRONMENT=/opt/etar/.venv UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never UV_PYTHON=3.11
WORKDIR /opt/etar
# etar[airflow] (Airflow, its providers, the full pyspark, papermill for the replay DAG): no
# Streamlit, no JupyterLab, no embedded stack (only etar-stack's pyproject.toml, for the lock).
COPY pyproject.toml uv.lock README.md ./
COPY etar-stack/pyproject.toml etar-stack/
RUN uv sync --frozen --no-dev --no-install-workspace --extra airflow
COPY etar etar
COPY spark spark
COPY dashboard dashboard
COPY notebooks notebooks
RUN uv sync --frozen --no-dev --extra airflow
# ETAR_STATE_DIR/airflow/runs is the notebook-runs volume: a new volume takes this folder's
# owner and mode, so the airflow user (any AIRFLOW_UID, group 0) can write executed notebooks
RUN mkdir -p /tmp/etar/airflow/runs && chown -R airflow:0 /tmp/etar && chmod -R g+rwX /tmp/etar
USER airflow
WORKDIR /opt/airflow
# ETAR_PROJECT_DIR: where the replay DAG finds the notebooks (/opt/etar/notebooks)
ENV PATH=/opt/etar/.venv/bin:$PATH \
    SPARK_HOME=/opt/etar/.venv/lib/python3.11/site-packages/pyspark \
    ETAR_PROJECT_DIR=/opt/etar \
    ETAR_SPARK_JARS_DIR=/opt/etar/jars \
    ETAR_STATE_DIR=/tmp/etar
