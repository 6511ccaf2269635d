"""A service that keeps dying is held to the restart rate, then restarted again: never given
up for good (with a lifetime count of 5, a poisoned sink stayed down for the stack's life)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import logging
    import sys
    from pathlib import Path
    from etar.config import Settings
    from etar_stack.supervisor import Service, Stack, port_open

    logging.basicConfig(level=logging.INFO)
    state, port = Path(sys.argv[1]), int(sys.argv[2])
    # serves for a second, then dies (as a sink failing on the same message would)
    child = ("import http.server, os, threading; threading.Timer(1.0, os._exit, [1]).start(); "
             f"http.server.test(http.server.SimpleHTTPRequestHandler, port={port}, "
             "bind='127.0.0.1')")
    web = Service(name="web", port=port, ready=lambda: port_open("127.0.0.1", port),
                  command=[sys.executable, "-c", child], start_timeout=30, stop_timeout=10)
    settings = Settings(_env_file=None, state_dir=state, stack_restart_burst=2,
                        stack_restart_interval_seconds=12)
    Stack(settings, [web]).up(echo=False)
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_crash_looping_service_waits_for_the_window_then_restarts(tmp_path: Path) -> None:
    log = tmp_path / "supervisor.err"
    with log.open("w") as err:
        supervisor = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path),
                                       str(_free_port())], stderr=err)
    try:
        deadline = time.monotonic() + 60
        while "web restarted" not in log.read_text().partition("stays down")[2]:
            assert supervisor.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        text = log.read_text()
        held, after = text.split("stays down", 1)
        assert "web restarted (1/2)" in held and "web restarted (2/2)" in held
        assert "it was restarted 2 times in 12s" in held.splitlines()[-1]
        assert "web restarted (2/2)" in after  # restarted again once the window allowed it
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(60)
