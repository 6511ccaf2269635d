"""What the compose stack runs, rehearsed without Docker: each image's Python environment built
by its Dockerfile's own uv commands, the Spark standalone cluster of spark-master/spark-worker
run as an unprivileged user over a read-only SPARK_HOME with the compose environment, the job
submitted to it from the Airflow image's environment with the driver host set as compose sets
it, notebook 00 without a native stack, and `make compose-check` without a Docker engine."""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etar.config import Settings
from etar.events.event import EventGenerator, GeneratorConfig, clock_within_minute
from etar.extract import storage
from etar.extract.parquet import to_arrow
from etar.minute import Minute
from tests import REPO_ROOT
from tests.compose import image_plan
from tests.compose.test_defects import DOCKERFILES

IMAGES = ("etar", "airflow")
LOCKED_PYSPARK = "4.3.0"


def _locked(name: str) -> str:
    import tomllib

    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == name)



@pytest.fixture(scope="module")
def images() -> Iterator[dict[str, tuple[image_plan.Plan, Path, Path]]]:
    """Each image's environment, built here the way its Dockerfile builds it: name → (plan,
    project folder, venv). Under a world-readable folder, like /opt in an image."""
    base = Path(tempfile.mkdtemp(prefix="etar-images-"))
    base.chmod(0o755)
    built = {}
    try:
        for name in IMAGES:
            plan = image_plan.plan(DOCKERFILES[name])
            root, venv = base / name / "opt-etar", base / name / "venv"
            image_plan.replay(plan, root, venv)
            built[name] = (plan, root, venv)
        yield built
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _python(venv: Path, code: str, env: dict[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 120) -> str:
    base = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    result = subprocess.run([str(venv / "bin" / "python"), "-c", code], env={**base, **(env or {})},
                            cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("name", IMAGES)
def test_image_environment_has_the_full_pyspark_and_imports_etar(
        images: dict[str, tuple[image_plan.Plan, Path, Path]], project: dict[str, Any],
        name: str) -> None:
    plan, root, venv = images[name]
    assert [argv[:2] for kind, argv in plan.steps if kind == "uv"] == [["uv", "sync"]] * 2
    env = image_plan.runtime_environ(plan, root, venv)
    spark_home = Path(env["SPARK_HOME"])
    assert spark_home.is_dir(), "the image's SPARK_HOME is not where uv put pyspark"
    assert list((spark_home / "jars").glob("spark-core_*.jar")), "pyspark-client, not pyspark"
    versions = _python(venv, "import importlib.metadata as m, json\n"
                       "names = ('pyspark', 'pyspark-client', 'apache-airflow', 'etar', "
                       "'etar-stack', 'chdb', 'mirakuru', 'streamlit', 'jupyterlab')\n"
                       "def v(n):\n try: return m.version(n)\n except m.PackageNotFoundError:"
                       " return None\n"
                       "print(json.dumps({n: v(n) for n in names}))")
    found = json.loads(versions)
    assert found["pyspark"] == _locked("pyspark") == LOCKED_PYSPARK
    assert found["pyspark-client"] is None, "the Spark provider's pyspark-client got in"
    # each image installs only what its services need: never the embedded stack's servers;
    # Airflow only in the Airflow image, Streamlit and JupyterLab only in etar's
    assert found["etar-stack"] is None and found["chdb"] is None and found["mirakuru"] is None
    if name == "airflow":
        assert found["apache-airflow"] == _locked("apache-airflow")
        assert found["streamlit"] is None and found["jupyterlab"] is None
    else:
        assert found["apache-airflow"] is None
        assert found["streamlit"] == _locked("streamlit")
        assert found["jupyterlab"] == _locked("jupyterlab")
    submit = subprocess.run([str(venv / "bin" / "spark-submit"), "--version"], env={
        **os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert submit.returncode == 0 and LOCKED_PYSPARK in submit.stderr + submit.stdout
    imports = {"etar": "import etar.analysis.submit, etar.orchestration.pipeline, "
                       "etar.warehouse.table, etar.extract.storage\n"
                       "import dashboard.api, streamlit, jupyterlab, uvicorn",
               "airflow": "import etar.analysis.submit, etar.orchestration.pipeline, "
                          "etar.orchestration.replay, papermill\n"
                          "from airflow.providers.apache.spark.operators.spark_submit import "
                          "SparkSubmitOperator\n"
                          "from airflow.providers.papermill.operators.papermill import "
                          "PapermillOperator\n"
                          "from airflow.providers.celery.executors import celery_executor"}
    # with the environment compose gives dashboard-api (it imports dashboard.api's app)
    service = {**project["dashboard-api"]["environment"]} if name == "etar" else {}
    _python(venv, imports[name], env={**env, **service, "PYTHONPATH": str(root)}, cwd=root)


def test_the_replay_dag_finds_the_notebooks_in_the_airflow_image(
        images: dict[str, tuple[image_plan.Plan, Path, Path]], tmp_path: Path) -> None:
    plan, root, venv = images["airflow"]
    env = image_plan.runtime_environ(plan, root, venv)
    env["ETAR_STATE_DIR"] = str(tmp_path / "state")
    code = ("import runpy, json\n"
            f"ns = runpy.run_path({str(REPO_ROOT / 'dags' / 'etar_notebook_replay.py')!r})\n"
            "dag = ns['etar_notebook_replay']()\n"
            "print(json.dumps([t.input_nb for t in dag.tasks if hasattr(t, 'input_nb')]))")
    out = _python(venv, code, env=env, cwd=tmp_path, timeout=180)
    inputs = json.loads(out.strip().splitlines()[-1])
    assert len(inputs) == 3
    for notebook in inputs:
        assert Path(notebook).is_file() and Path(notebook).parent == root / "notebooks"


# --- the Spark cluster ----------------------------------------------------------------------


def _address() -> str | None:
    """A non-loopback IPv4 address of this machine (what a compose service name resolves to)."""
    result = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                            capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        return line.split()[3].split("/")[0]
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_user(command: list[str]) -> list[str]:
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]


def _json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        loaded: dict[str, Any] = json.load(response)
        return loaded


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _minute_parquet(minute: Minute, rows: int) -> tuple[bytes, int]:
    events = itertools.islice(EventGenerator(GeneratorConfig(seed=26), clock=clock_within_minute(
        minute, random.Random(26))), rows)
    frame = pd.DataFrame([event.to_avro() for event in events])
    frame["event_ts"] = pd.to_datetime(frame["event_ts"], utc=True)
    table: pa.Table = to_arrow(frame)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    errors = int((frame["status"] == "ERROR").sum())
    return sink.getvalue(), errors


@pytest.fixture
def bucket(stack_settings: Settings, unique: str) -> Iterator[Settings]:
    settings = stack_settings.model_copy(update={"s3_bucket": f"compose-{unique}"})
    storage.ensure_bucket(settings)
    yield settings
    storage.drop_bucket(settings)


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="runs spark-master and spark-worker as `nobody` "
                    "(setpriv) over a state folder chowned to it: needs root")
def test_spark_cluster_runs_the_job_as_compose_runs_it(
        images: dict[str, tuple[image_plan.Plan, Path, Path]], project: dict[str, Any],
        bucket: Settings, tmp_path: Path) -> None:
    """spark-master and spark-worker run as `nobody` from the etar image's environment
    (SPARK_HOME read-only to them) with spark-worker's compose environment; the job is
    submitted from the airflow image's environment the way the DAG does, with
    ETAR_BIND_HOST set as compose sets it: an address the executors reach, not 127.0.0.1.
    A worker without the S3 credentials in its environment fails the job (executors get
    them from their worker only)."""
    address = _address()
    if address is None:
        pytest.skip("this machine has no non-loopback address for the driver to advertise")
    etar_plan, etar_root, etar_venv = images["etar"]
    air_plan, air_root, air_venv = images["airflow"]
    jars = etar_root / "jars"  # the images' /opt/etar/jars, from the same pom
    shutil.copytree(bucket.s3a_jars_dir, jars, dirs_exist_ok=True)
    shutil.copytree(jars, air_root / "jars", dirs_exist_ok=True)

    state = Path(tempfile.mkdtemp(prefix="etar-spark-state-"))  # the image's /var/lib/etar
    state.chmod(0o755)
    shutil.chown(state, "nobody", "nogroup")
    image_env = image_plan.runtime_environ(etar_plan, etar_root, etar_venv)
    image_env["ETAR_STATE_DIR"] = str(state)
    worker_env = {k: v.replace("/var/lib/etar", str(state))
                  for k, v in project["spark-worker"]["environment"].items()}
    assert {"SPARK_WORKER_DIR", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(worker_env)
    worker_env.update({"AWS_ACCESS_KEY_ID": bucket.s3_access_key,
                       "AWS_SECRET_ACCESS_KEY": bucket.s3_secret_key.get_secret_value()})
    base = {"PATH": image_env["PATH"], "HOME": str(state), "LANG": "C.UTF-8"}
    spark_home = image_env["SPARK_HOME"]
    readonly = subprocess.run(_as_user(["test", "-w", spark_home]), check=False)
    assert readonly.returncode != 0, "SPARK_HOME should be read-only for the service's user"

    master_port, master_ui, worker_ui = _free_port(), _free_port(), _free_port()
    master_cmd = [{"spark-master": address, "7077": str(master_port),
                   "8080": str(master_ui)}.get(arg, arg)
                  for arg in project["spark-master"]["command"]]
    url = f"spark://{address}:{master_port}"
    worker_cmd = [{"spark://spark-master:7077": url, "8081": str(worker_ui)}.get(arg, arg)
                  for arg in project["spark-worker"]["command"]]
    logs = tmp_path / "logs"
    logs.mkdir()
    processes: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        with (logs / log).open("wb") as out:
            process = subprocess.Popen(_as_user(command), env=env, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(process)
        return process

    try:
        start(master_cmd, {**base, **image_env}, "master.log")
        status = f"http://{address}:{master_ui}/json/"
        _wait(lambda: _json(status), 90, "the Spark master")
        # without SPARK_WORKER_DIR the worker wants SPARK_HOME/work, which it cannot create
        broken = start(worker_cmd, {**base, **image_env}, "worker-without-dir.log")
        assert broken.wait(timeout=90) != 0
        refused = (logs / "worker-without-dir.log").read_text()
        assert f"Failed to create directory {spark_home}/work" in refused

        minute = Minute.parse("2026-01-01T10:30")
        body, errors = _minute_parquet(minute, 2_000)
        storage.upload(minute.parquet_name, io.BytesIO(body), "application/octet-stream",
                       len(body), bucket)
        driver_env = image_plan.runtime_environ(air_plan, air_root, air_venv)
        driver_env.update(bucket.environ("s3_endpoint", "s3_access_key", "s3_secret_key",
                                         "s3_region", "s3_bucket"))
        driver_env.update({"ETAR_SPARK_MASTER": url, "ETAR_SPARK_MODE": "submit",
                           "ETAR_BIND_HOST": address, "ETAR_STATE_DIR": str(tmp_path)})
        source = storage.s3a_url(minute.parquet_name, bucket)
        job = ("import json\nfrom etar.analysis.submit import AnalysisFailed, run_job\n"
               f"try:\n    run = run_job({source!r}, timeout=240)\n"
               "except AnalysisFailed as exc:\n    print('FAILED', exc)\n"
               "else:\n    print(json.dumps(run.__dict__))")

        # the worker's compose environment less the S3 credentials: the driver has them, its
        # executors (launched by the worker, with the worker's environment) do not
        bare = {k: v for k, v in worker_env.items() if not k.startswith("AWS_")}
        bare["SPARK_WORKER_DIR"] = str(state / "spark-work-without-credentials")
        without = start(worker_cmd, {**base, **image_env, **bare}, "worker-without-creds.log")
        _wait(lambda: _json(status).get("aliveworkers"), 90, "the worker to register")
        failed = _python(air_venv, job, env=driver_env, cwd=tmp_path, timeout=300)
        assert failed.strip().splitlines()[-1].startswith("FAILED"), failed
        said = failed + "".join(p.read_text(errors="replace") for p in
                                Path(bare["SPARK_WORKER_DIR"]).glob("app-*/*/stderr"))
        assert "credential" in said.lower(), failed
        with pytest.raises(storage.ObjectMissing):
            storage.stat(minute.json_name, bucket)
        os.killpg(without.pid, 15)
        without.wait(timeout=30)
        _wait(lambda: _json(status).get("aliveworkers") == 0, 150, "the worker to leave")

        start(worker_cmd, {**base, **image_env, **worker_env}, "worker.log")
        _wait(lambda: _json(status).get("aliveworkers"), 90, "the worker to register")
        run = _python(air_venv, job, env=driver_env, cwd=tmp_path, timeout=300)
        assert json.loads(run.strip().splitlines()[-1])["report"] == minute.json_name

        report = storage.read_json(minute.json_name, bucket)
        assert report["total_events"] == 2_000 and report["total_errors"] == errors
        apps = _json(status)["completedapps"]
        assert len(apps) == 2  # the one without credentials, then this one
        work = Path(worker_env["SPARK_WORKER_DIR"])
        stderr = next(work.glob("app-*/*/stderr"))
        assert stderr.stat().st_uid == _uid("nobody")
        command = stderr.read_text().split("\n", 1)[0]
        assert f"CoarseGrainedScheduler@{address}:" in command, command
        assert "127.0.0.1" not in command
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
        shutil.rmtree(state, ignore_errors=True)


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


# --- notebook 00 and make compose-check ----------------------------------------------------


@pytest.mark.integration
def test_notebook_00_runs_where_no_native_stack_runs(stack_settings: Settings,
                                                     tmp_path: Path) -> None:
    """The compose jupyter has no native stack: 00_stack checks the services it reaches (here
    the native stack's, seen from a state folder that holds no stack)."""
    import papermill
    from confluent_kafka.schema_registry import Schema

    from etar.events.event import load_schema_str
    from etar.events.serde import registry_client

    registry_client(stack_settings).register_schema(
        f"{stack_settings.kafka_topic}-value", Schema(load_schema_str(), "AVRO"))
    env = {"ETAR_STATE_DIR": str(tmp_path / "no-stack"),
           **stack_settings.environ("kafka_bootstrap_servers", "schema_registry_url",
                                    "clickhouse_port", "s3_endpoint")}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        papermill.execute_notebook(str(REPO_ROOT / "notebooks" / "00_stack.ipynb"),
                                   str(tmp_path / "00_stack.ipynb"), kernel_name="python3",
                                   progress_bar=False, cwd=str(REPO_ROOT / "notebooks"))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_make_compose_check_fails_fast_without_a_docker_engine() -> None:
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False) \
        if shutil.which("docker") else None
    if probe is not None and probe.returncode == 0:
        pytest.skip("a Docker engine is reachable here: `make compose-check` would start the "
                    "whole stack")
    started = time.monotonic()
    result = subprocess.run(["make", "-s", "compose-check"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode != 0
    direct = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "compose_check.py")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert direct.returncode == 2, direct.stderr
    assert time.monotonic() - started < 20
    message = result.stdout + result.stderr
    assert ("no Docker engine is reachable" in message
            or "no `docker` command on PATH" in message), message


@pytest.mark.integration
def test_the_one_shot_init_commands_create_the_table_and_bucket_the_settings_name(
        project: dict[str, Any], stack_settings: Settings, unique: str) -> None:
    """clickhouse-init and s3-init's own commands, run against the native stack with a database
    and a bucket of this test's: the table lands in ETAR_CLICKHOUSE_DATABASE (the server's
    initdb SQL would have put it in `default`), the bucket is created."""
    from etar.warehouse import table as warehouse

    database, bucket_name = f"compose_{unique}", f"compose-init-{unique}"
    admin = warehouse.client(stack_settings)
    admin.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    settings = stack_settings.model_copy(update={"clickhouse_database": database,
                                                 "s3_bucket": bucket_name})
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(settings.environ("clickhouse_host", "clickhouse_port", "clickhouse_user",
                                "clickhouse_password", "clickhouse_database",
                                "clickhouse_table", "s3_endpoint", "s3_access_key",
                                "s3_secret_key", "s3_region", "s3_bucket"))
    try:
        for name in ("clickhouse-init", "s3-init"):
            subprocess.run(project[name]["command"], env=env, cwd=REPO_ROOT, check=True,
                           timeout=120, capture_output=True)
        tables = admin.command("SELECT count() FROM system.tables WHERE database = "
                               "{db:String} AND name = {t:String}",
                               parameters={"db": database, "t": settings.clickhouse_table})
        assert int(tables) == 1
        assert storage.client(settings).bucket_exists(bucket_name)
    finally:
        admin.command(f"DROP DATABASE IF EXISTS {database}")
        storage.drop_bucket(settings)
