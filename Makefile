# The two commands: `make up` runs the pipeline, `make test` runs every test.
# Both install what they need first (idempotent, fast when nothing changed).
UV_VERSION := 0.13.9
PYTHON ?= python3
UV := $(PYTHON) -m uv
RUN := $(UV) run --frozen
export UV_PYTHON_DOWNLOADS := never

.PHONY: install up down test unit unit-pythons lint bench clean chaos compose-check cluster cluster-airflow

install:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		|| echo "warning: Debian's chromium is missing; the browser test needs it"
	@{ ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1; } \
		|| { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends postgresql redis-server; } \
		|| echo "warning: Debian's postgresql / redis-server are missing; Airflow needs them"
	$(RUN) etar stack install

up: install
	$(RUN) etar up

down:
	$(RUN) etar stack down

lint: install
	$(RUN) ruff check .
	$(RUN) mypy
	$(RUN) nbstripout --verify notebooks/*.ipynb

unit: install
	$(RUN) pytest tests/unit

# The unit tests on the other Pythons of requires-python (the full suite runs on 3.11): each
# in its own environment (.venv-3.12, .venv-3.13) synced from the same lock; pyenv's
# interpreter when there is one, else python3.x from PATH.
OTHER_PYTHONS := 3.12 3.13
python_for = $(or $(lastword $(wildcard $(HOME)/.pyenv/versions/$(1).*/bin/python$(1))),python$(1))
unit-pythons: install
	@set -e; $(foreach v,$(OTHER_PYTHONS),echo "unit tests on Python $(v)"; \
		UV_PROJECT_ENVIRONMENT=.venv-$(v) $(UV) run --frozen --python $(call python_for,$(v)) \
		pytest -q -p no:cacheprovider tests/unit;)

test: lint unit-pythons
	$(RUN) etar stack exec -- pytest

# The fault suite's longer variants (more events per fault); its table: test-artifacts/faults.md
chaos: install
	ETAR_CHAOS=1 $(RUN) etar stack exec -- pytest tests/faults tests/security

# The cluster topology (3 Kafka brokers, 2 sinks, a Spark master + 2 workers) on its own state
# folder, and its fault suite (tests/cluster, collected only on that topology; not in `make
# test`); its table: test-artifacts/faults-cluster.md
CLUSTER_SERVICES := kafka,schema-registry,clickhouse,sink,s3,spark-master,spark-worker
CLUSTER_ENV := ETAR_TOPOLOGY=cluster ETAR_STATE_DIR=.etar/cluster ETAR_SPARK_MODE=submit
cluster: install
	mkdir -p .etar/cluster && ln -sfn ../lib .etar/cluster/lib
	$(CLUSTER_ENV) ETAR_STACK_SERVICES=$(CLUSTER_SERVICES) \
		$(RUN) etar stack exec -- pytest tests/cluster -m "not cluster_airflow"

# The same topology with Airflow (2 Celery workers) and the dashboard API: a worker killed
# mid-task, and `etar demo` (stops a running `make cluster` stack first: other services)
CLUSTER_AIRFLOW := dashboard-api,postgres,redis,airflow-api-server,airflow-scheduler,$\
	airflow-dag-processor,airflow-triggerer,airflow-worker
cluster-airflow: install
	mkdir -p .etar/cluster && ln -sfn ../lib .etar/cluster/lib
	$(CLUSTER_ENV) $(RUN) etar stack down
	$(CLUSTER_ENV) ETAR_STACK_SERVICES=$(CLUSTER_SERVICES),$(CLUSTER_AIRFLOW) \
		$(RUN) etar stack exec -- pytest tests/cluster -m cluster_airflow

bench: install
	$(RUN) python benchmarks/producer.py

clean:
	$(RUN) etar stack down --volumes

# The compose stack on a Docker host: up, one minute end to end, produced = ClickHouse = report
# (standard library only; fails fast when no Docker engine is reachable)
compose-check:
	$(PYTHON) tools/compose_check.py
