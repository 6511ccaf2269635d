# syntax=docker/dockerfile:1.7
# Airflow 3 with etar: the DAG imports the etar package and runs spark-submit against the
# spark-master service, so the image carries Java, etar's locked dependencies (pyspark at the
# cluster's version) and the S3A jars.
FROM maven:3.9.9-eclipse-temurin-17 AS s3a-jars
COPY etar/native/poms/spark-s3a.xml /build/pom.xml
RUN mvn -B -q -f /build/pom.xml dependency:copy-dependencies \
        -DoutputDirectory=/jars -DincludeScope=runtime

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv
FROM python:3.11.11-slim-bookworm AS requirements
COPY --from=uv /uv /usr/local/bin/uv
COPY pyproject.toml uv.lock /src/
RUN cd /src && uv export --frozen --no-dev --no-emit-project --no-hashes -o /requirements.txt

FROM apache/airflow:3.3.2-python3.11
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
COPY --from=s3a-jars /jars /opt/etar/jars
USER airflow
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt
COPY --chown=airflow:root . /opt/etar
RUN pip install --no-cache-dir --no-deps /opt/etar
ENV ETAR_SPARK_JARS_DIR=/opt/etar/jars ETAR_STATE_DIR=/tmp/etar
