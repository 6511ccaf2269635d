"""The supervisor with real processes: start in order, restart what dies, stop on SIGTERM.

The services are tiny HTTP servers, so no part of the etar stack is needed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from etar_stack.supervisor import port_open

SCRIPT = textwrap.dedent("""
    import logging
    import sys
    from pathlib import Path
    from etar.config import Settings
    from etar_stack.supervisor import Service, Stack, port_open

    logging.basicConfig(level=logging.INFO)
    state, ports = Path(sys.argv[1]), [int(p) for p in sys.argv[2:]]
    services = [Service(name=f"web{i}", port=port, ready=lambda p=port: port_open("127.0.0.1", p),
                        command=[sys.executable, "-m", "http.server", str(port),
                                 "--bind", "127.0.0.1"], start_timeout=30, stop_timeout=10)
                for i, port in enumerate(ports)]
    Stack(Settings(_env_file=None, state_dir=state), services).up(echo=False)
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _state(path: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((path / "stack.json").read_text())
        return state
    except (OSError, ValueError):
        return {}


def test_start_restart_and_stop(tmp_path: Path) -> None:
    ports = [_free_port(), _free_port()]
    log = (tmp_path / "supervisor.err").open("w")
    supervisor = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path), *map(str, ports)],
                                  stderr=log)
    try:
        _wait(lambda: _state(tmp_path).get("status") == "ready")
        assert all(port_open("127.0.0.1", port) for port in ports)
        first = _state(tmp_path)["services"]["web1"]

        os.killpg(first, signal.SIGKILL)  # the service dies on its own
        _wait(lambda: _state(tmp_path)["services"]["web1"] != first, timeout=60)
        _wait(lambda: port_open("127.0.0.1", ports[1]))

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(60) == 0
        assert not any(port_open("127.0.0.1", port) for port in ports)
        assert not (tmp_path / "stack.json").exists()
        messages = (tmp_path / "supervisor.err").read_text()
        assert "web1 exited" in messages and "web1 restarted (1/5)" in messages
    finally:
        if supervisor.poll() is None:
            supervisor.kill()


def test_a_taken_port_is_refused_with_the_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(port)],
                                capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert f"port {port} is already in use" in result.stderr


FLAKY = textwrap.dedent("""
    import sys
    from pathlib import Path
    from etar.config import Settings
    from etar_stack.supervisor import Service, Stack, port_open

    state, port, fails = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    # exits `fails` times (as a registry whose topic has no leader yet would), then serves
    child = (f"import pathlib, subprocess, sys; marks = pathlib.Path({str(state)!r}) / 'tries'; "
             f"marks.open('a').write('x'); n = len(marks.read_text()); "
             f"sys.exit(1) if n <= {fails} else subprocess.run([sys.executable, '-m', "
             f"'http.server', '{port}', '--bind', '127.0.0.1'])")
    web = Service(name="web", port=port, ready=lambda: port_open("127.0.0.1", port),
                  command=[sys.executable, "-c", child], start_timeout=30, stop_timeout=10)
    stack = Stack(Settings(_env_file=None, state_dir=state), [web])
    stack.log_dir.mkdir(parents=True)
    executor = stack._start(web)
    print("ready", flush=True)
    executor.stop()
""")


@pytest.mark.parametrize(("fails", "starts"), [(2, True), (3, False)])
def test_a_service_that_exits_while_starting_gets_three_tries(
        tmp_path: Path, fails: int, starts: bool) -> None:
    result = subprocess.run([sys.executable, "-c", FLAKY, str(tmp_path), str(_free_port()),
                             str(fails)], capture_output=True, text=True, timeout=90, check=False)
    assert (tmp_path / "tries").read_text() == "x" * min(fails + 1, 3)
    if starts:
        assert result.returncode == 0 and "ready" in result.stdout, result.stderr[-2000:]
    else:
        assert result.returncode != 0 and "web failed to start" in result.stderr
