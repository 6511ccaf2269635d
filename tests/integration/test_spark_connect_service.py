"""The warm Spark Connect server outlives its clients, and the supervisor restarts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from etar.config import Settings
from etar_stack import stack
from etar_stack.services import spark_connect
from tests.integration.lanes import wait_for

pytestmark = pytest.mark.integration

CLIENT = """
import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.remote(sys.argv[1]).getOrCreate()
print("connected", flush=True)
spark.range(200_000_000).selectExpr("sum(id * id)").collect()  # long: killed before the end
"""


def _server_pid(settings: Settings) -> int:
    (row,) = [r for r in stack(settings).status() if r["service"] == "spark-connect"]
    assert row["up"], row
    return int(row["pid"])


@pytest.mark.skipif(os.environ.get("ETAR_SPARK_MODE", "connect") != "connect",
                    reason="the stack runs no Spark Connect server in submit mode")
def test_a_killed_client_leaves_the_server_serving(stack_settings: Settings) -> None:
    client = subprocess.Popen([sys.executable, "-c", CLIENT, stack_settings.spark_connect_url],
                              stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None and "connected" in client.stdout.readline()
    time.sleep(2)  # mid-query
    client.kill()
    client.wait(30)
    assert spark_connect.ready(stack_settings)


@pytest.mark.skipif(os.environ.get("ETAR_SPARK_MODE", "connect") != "connect",
                    reason="the stack runs no Spark Connect server in submit mode")
def test_the_supervisor_restarts_a_killed_server(stack_settings: Settings) -> None:
    before = _server_pid(stack_settings)
    os.kill(before, signal.SIGKILL)  # spark-submit execs the JVM: this is the server

    def back() -> bool:
        try:
            return _server_pid(stack_settings) != before and spark_connect.ready(stack_settings)
        except Exception:
            return False

    wait_for(back, 240, "the supervisor to restart spark-connect")
