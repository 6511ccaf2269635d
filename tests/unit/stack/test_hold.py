"""``etar stack hold``: a service killed during a hold stays down until the hold ends (a long
outage the fault tests need, or maintenance), then the supervisor restarts it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from etar.config import Settings
from etar.errors import StackError
from etar_stack.supervisor import Service, Stack, port_open

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from etar.config import Settings
    from etar_stack.supervisor import Service, Stack, port_open

    state, port = Path(sys.argv[1]), int(sys.argv[2])
    web = Service(name="web", port=port, ready=lambda: port_open("127.0.0.1", port),
                  command=[sys.executable, "-m", "http.server", str(port), "--bind",
                           "127.0.0.1"], start_timeout=30, stop_timeout=10)
    Stack(Settings(_env_file=None, state_dir=state), [web]).up(echo=False)
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _web(state: Path, port: int) -> Stack:
    web = Service(name="web", port=port, ready=lambda: port_open("127.0.0.1", port),
                  command=[])
    return Stack(Settings(_env_file=None, state_dir=state), [web])


def _pid(stack: Stack) -> int | None:
    try:
        return json.loads(stack.state_file.read_text())["services"].get("web")
    except (OSError, ValueError, KeyError):
        return None


def _wait(condition: object, timeout: float) -> float:
    began = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - began < timeout, "timed out"
        time.sleep(0.2)
    return time.monotonic() - began


def test_a_held_service_stays_down_until_the_hold_ends(tmp_path: Path) -> None:
    port = _free_port()
    stack = _web(tmp_path, port)
    supervisor = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path), str(port)],
                                  stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _pid(stack) and port_open("127.0.0.1", port), 60)
        old = _pid(stack)
        assert old is not None
        stack.hold("web", 8)
        os.killpg(old, signal.SIGKILL)
        _wait(lambda: not port_open("127.0.0.1", port), 10)
        time.sleep(5)  # without the hold it would be back in ~2 s (the first back-off)
        assert not port_open("127.0.0.1", port) and _pid(stack) == old
        assert 0 < stack.held_for("web") < 4
        _wait(lambda: _pid(stack) != old and port_open("127.0.0.1", port), 30)
        assert stack.held_for("web") == 0 and not (stack.hold_dir / "web").exists()
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(60)


def test_a_hold_names_a_service_of_the_stack(tmp_path: Path) -> None:
    stack = _web(tmp_path, _free_port())
    with pytest.raises(StackError, match="no service 'sink'"):
        stack.hold("sink", 60)
    with pytest.raises(StackError, match="0 to 86400"):
        stack.hold("web", 0)
