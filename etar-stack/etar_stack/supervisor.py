"""Start, watch and stop the native stack's services in dependency order.

Each service runs under a mirakuru executor whose readiness check is the service's own probe
(a metadata request, an HTTP call…). Output goes to ``<state>/logs/<service>.log``; in the
foreground the supervisor echoes those files with a ``service |`` prefix. A JSON state file
records the supervisor's and the services' pids, so ``etar stack status|down`` work from any
shell, and ``etar stack up --detach`` is the same supervisor started in its own session.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from mirakuru import Executor
from mirakuru.exceptions import (
    AlreadyRunning,
    ExecutorError,
    ProcessExitedWithError,
    ProcessFinishedWithError,
)

from etar.config import Settings
from etar.errors import StackError
from etar.security import secure_state_dir

log = logging.getLogger(__name__)


class RestartBudget:
    """systemd's ``StartLimitBurst`` per ``StartLimitIntervalSec``, as a rate: at most ``burst``
    restarts of a service within any ``interval`` seconds. Past that, the service waits until
    its oldest restart leaves the window, then is restarted again: never given up for good."""

    def __init__(self, burst: int, interval: float) -> None:
        self.burst, self.interval = burst, interval
        self.times: deque[float] = deque()

    def _forget(self, now: float) -> None:
        while self.times and self.times[0] <= now - self.interval:
            self.times.popleft()

    def wait(self, now: float) -> float:
        """Seconds until a restart is allowed (0: now)."""
        self._forget(now)
        if len(self.times) < self.burst:
            return 0.0
        return self.times[0] + self.interval - now

    def record(self, now: float) -> int:
        """Count a restart at ``now``; the restarts within the window, this one included."""
        self._forget(now)
        self.times.append(now)
        return len(self.times)

    @staticmethod
    def backoff(count: int) -> float:
        """The pause before the ``count``-th restart within the window: 2, 4, 8 … 30 s."""
        return float(min(2 ** count, 30))


@dataclass
class Service:
    """One long-running process of the native stack."""

    name: str
    command: list[str]
    port: int | None
    """TCP port it listens on (checked free before start); None for a pure client."""
    ready: Callable[[], bool]
    url: str = ""
    prepare: Callable[[], None] | None = None
    after_start: Callable[[], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    start_timeout: float = 180
    stop_timeout: float = 60
    describe: Callable[[], str] | None = None
    """Extra one-line status (lag, rows/s…) shown by ``etar stack status``."""


class _ServiceExecutor(Executor):  # type: ignore[misc]
    """A mirakuru executor whose readiness is the service's probe."""

    def __init__(self, service: Service, log_file: IO[str], settings: Settings) -> None:
        super().__init__(
            service.command,
            timeout=service.start_timeout,
            sleep=0.5,
            # Every service sees the same state and project folders, whatever its cwd.
            envvars={**settings.environ("state_dir", "project_dir"), **service.env},
            cwd=str(settings.project_dir),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        self.service = service
        self._host = settings.bind_host

    def pre_start_check(self) -> bool:
        """Something already listens on the service's port."""
        return self.service.port is not None and port_open(self._host, self.service.port)

    def after_start_check(self) -> bool:
        return _probe(self.service)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def _probe(service: Service) -> bool:
    try:
        return service.ready()
    except Exception as exc:  # a probe that raises means "not ready yet"
        log.debug("probe of %s: %s", service.name, exc)
        return False


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); /proc tells it apart.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


START_ATTEMPTS = 3
"""Tries a service gets when its process exits while starting."""


class _ExitedEarly(Exception):
    """The service's process exited before it was ready."""


class _Stop(BaseException):
    """Raised in the supervisor's main thread by SIGTERM / SIGINT (not an Exception, so no
    ``except Exception`` swallows it)."""


class Stack:
    """The native stack: its services, state file and logs."""

    def __init__(self, settings: Settings, services: list[Service]) -> None:
        self.settings = settings
        self.services = services
        self.state_dir = settings.state_dir
        self.log_dir = self.state_dir / "logs"
        self.state_file = self.state_dir / "stack.json"
        self.hold_dir = self.state_dir / "held"

    # --- holds ---------------------------------------------------------------------------
    def hold(self, name: str, seconds: float) -> float:
        """Keep ``name`` down for ``seconds`` if it exits (maintenance, or a fault test of a
        long outage): the supervisor does not restart it before then. The wall-clock time the
        hold ends."""
        if name not in {s.name for s in self.services}:
            raise StackError(f"no service {name!r} in this stack")
        if not 0 < seconds <= 86_400:
            raise StackError(f"a hold lasts 0 to 86400 s, not {seconds}")
        self.hold_dir.mkdir(parents=True, exist_ok=True)
        until = time.time() + seconds
        (self.hold_dir / name).write_text(f"{until}\n")
        return until

    def release(self, name: str) -> None:
        """End ``name``'s hold now (the supervisor restarts it if it is down)."""
        (self.hold_dir / name).unlink(missing_ok=True)

    def held_for(self, name: str) -> float:
        """Seconds ``name`` is still held down (0: not held; an expired hold is removed)."""
        path = self.hold_dir / name
        try:
            left = float(path.read_text()) - time.time()
        except (OSError, ValueError):
            return 0.0
        if left <= 0:
            path.unlink(missing_ok=True)
            return 0.0
        return left

    # --- state ---------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any] | None:
        """The state file, or None when no supervisor is alive."""
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return state if _alive(state.get("pid")) else None

    def _write_state(self, status: str, pids: dict[str, int]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "status": status, "services": pids}))
        tmp.replace(self.state_file)

    def status(self) -> list[dict[str, Any]]:
        """One row per service: name, up (its probe answers), pid, url, detail."""
        state = self.read_state() or {}
        pids = state.get("services", {})
        rows = []
        for service in self.services:
            up = _probe(service)
            detail = ""
            if up and service.describe is not None:
                with contextlib.suppress(Exception):
                    detail = service.describe()
            rows.append({"service": service.name, "up": up, "pid": pids.get(service.name),
                         "url": service.url, "detail": detail})
        return rows

    def is_up(self) -> bool:
        """Every service answers its readiness probe."""
        return all(row["up"] for row in self.status())

    # --- up ------------------------------------------------------------------------------
    def up_detached(self, timeout: float = 900) -> None:
        """Start the supervisor in its own session and return once every service is ready."""
        if self.read_state() is not None:
            raise StackError("the stack is already running (see `etar stack status`)")
        secure_state_dir(self.state_dir)  # 0700: data, logs and configs are the user's alone
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / "supervisor.log", "w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "etar", "stack", "up", "--quiet"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = (self.log_dir / "supervisor.log").read_text()[-3000:]
                raise StackError(f"the stack failed to start:\n{tail}")
            state = self.read_state()
            if state is not None and state.get("status") == "ready":
                return
            time.sleep(0.5)
        process.terminate()
        raise StackError(f"the stack was not ready within {timeout:.0f}s; see {self.log_dir}")

    def up(self, echo: bool = True) -> None:
        """Start every service in order, then supervise until SIGTERM / Ctrl-C."""
        if self.read_state() is not None:
            raise StackError("the stack is already running (see `etar stack status`)")
        secure_state_dir(self.state_dir)  # 0700: data, logs and configs are the user's alone
        self.log_dir.mkdir(parents=True, exist_ok=True)
        executors: list[_ServiceExecutor] = []
        previous = {sig: signal.signal(sig, self._raise_stop)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        tails = {s.name: _Tail(self.log_dir / f"{s.name}.log") for s in self.services}
        try:
            self._write_state("starting", {})
            for service in self.services:
                executors.append(self._start(service))
                if service.after_start is not None:
                    service.after_start()
                self._write_state("starting", _pids(executors))
            self._write_state("ready", _pids(executors))
            log.info("stack ready: %s", ", ".join(f"{s.name} {s.url}" for s in self.services))
            self._watch(executors, tails, echo)
        except _Stop:
            log.info("stopping the stack")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            with _signals_ignored():
                self._stop_all(executors)
                self.state_file.unlink(missing_ok=True)

    @staticmethod
    def _raise_stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    def _start(self, service: Service) -> _ServiceExecutor:
        """Start ``service`` and wait until it is ready. A process that exits during start-up
        (a dependency that was not quite ready, say) gets ``START_ATTEMPTS`` tries in all."""
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return self._start_once(service)
            except _ExitedEarly as exc:
                if attempt == START_ATTEMPTS:
                    raise StackError(str(exc)) from exc.__cause__
                log.warning("%s exited during start-up; trying again (%d/%d)", service.name,
                            attempt + 1, START_ATTEMPTS)
                time.sleep(2 * attempt)
        raise AssertionError("unreachable")

    def _start_once(self, service: Service) -> _ServiceExecutor:
        log.info("starting %s", service.name)
        if service.prepare is not None:
            service.prepare()
        log_path = self.log_dir / f"{service.name}.log"
        with open(log_path, "a", buffering=1) as log_file:
            executor = _ServiceExecutor(service, log_file, self.settings)
            try:
                executor.start()
            except AlreadyRunning as exc:
                executor.kill()
                raise StackError(
                    f"{service.name}: port {service.port} is already in use; stop whatever "
                    "listens there or change its port in .env"
                ) from exc
            except ExecutorError as exc:
                executor.kill()
                tail = log_path.read_text()[-2000:]
                message = f"{service.name} failed to start: {exc}\n{tail}"
                if isinstance(exc, ProcessExitedWithError):
                    raise _ExitedEarly(message) from exc
                raise StackError(message) from exc
            except BaseException:  # interrupted while waiting: leave no orphan behind
                executor.kill()
                raise
        log.info("%s ready at %s", service.name, service.url or service.port)
        return executor

    def _watch(
        self, executors: list[_ServiceExecutor], tails: dict[str, _Tail], echo: bool
    ) -> None:
        """Echo the logs (foreground) and restart services that exit on their own.

        Restarts are a rate (:class:`RestartBudget`, ``stack_restart_burst`` per
        ``stack_restart_interval_seconds``), waiting longer after each within the window; a
        service over its budget stays down (``etar stack status`` shows it) until the window
        lets it restart, and the others keep running.
        """
        width = max(len(name) for name in tails)
        budgets = {e.service.name: RestartBudget(self.settings.stack_restart_burst,
                                                 self.settings.stack_restart_interval_seconds)
                   for e in executors}
        held: set[str] = set()
        while True:
            for name, tail in tails.items():
                for line in tail.new_lines():
                    if echo:
                        print(f"{name:<{width}} | {line}", flush=True)
            for index, executor in enumerate(executors):
                name = executor.service.name
                if executor.running():
                    continue
                hold = self.held_for(name)
                if hold > 0:
                    if name not in held:
                        held.add(name)
                        log.warning("%s exited; it is held down for %.0fs more (etar stack "
                                    "hold)", name, hold)
                    continue
                budget = budgets[name]
                wait = budget.wait(time.monotonic())
                if wait > 0:
                    if name not in held:
                        held.add(name)
                        log.error("%s exited; it was restarted %d times in %.0fs, so it stays "
                                  "down for %.0fs (see %s)", name, budget.burst,
                                  budget.interval, wait, self.log_dir / f"{name}.log")
                    continue
                if name in held:
                    held.discard(name)
                else:
                    log.error("%s exited; see %s", name, self.log_dir / f"{name}.log")
                count = budget.record(time.monotonic())
                executor.kill()  # reap it and anything it left behind
                time.sleep(budget.backoff(count))
                try:
                    executors[index] = self._start(executor.service)
                    if executor.service.after_start is not None:
                        executor.service.after_start()
                    log.info("%s restarted (%d/%d), restarts allowed in any %.0fs", name,
                             count, budget.burst, budget.interval)
                except Exception as exc:
                    log.error("restarting %s failed: %s", name, exc)
                self._write_state("ready", _pids(executors))
            time.sleep(0.3)

    def _stop_all(self, executors: list[_ServiceExecutor]) -> None:
        for executor in reversed(executors):
            name = executor.service.name
            log.info("stopping %s", name)
            executor._timeout = executor.service.stop_timeout
            try:
                executor.stop()
            except ProcessFinishedWithError as exc:
                log.info("%s exited with code %s", name, exc.exit_code)
            except Exception as exc:
                log.warning("stopping %s: %s", name, exc)

    # --- down / logs ---------------------------------------------------------------------
    def down(self, timeout: float = 120) -> bool:
        """Stop a running stack. Returns False when none was running."""
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return False
        supervisor = state.get("pid")
        if _alive(supervisor):
            os.kill(supervisor, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(supervisor) and time.monotonic() < deadline:
                time.sleep(0.3)
        # Whatever survived (a killed supervisor, a stuck service) is ended by process group.
        for pid in state.get("services", {}).values():
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)
        return True

    def log_lines(self, service: str | None, lines: int) -> Iterator[str]:
        """The last ``lines`` lines of one service's log (or of each), prefixed."""
        names = [service] if service else [s.name for s in self.services]
        known = {s.name for s in self.services} | {"supervisor"}
        for name in names:
            if name not in known:
                raise StackError(f"no service named {name!r}; known: {', '.join(sorted(known))}")
            path = self.log_dir / f"{name}.log"
            if path.exists():
                for line in path.read_text(errors="replace").splitlines()[-lines:]:
                    yield f"{name} | {line}"


def _pids(executors: list[_ServiceExecutor]) -> dict[str, int]:
    return {e.service.name: e.process.pid for e in executors if e.process is not None}


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Let an orderly shutdown finish even if Ctrl-C is pressed again."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Tail:
    """Reads the lines appended to a file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.partial = ""

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, errors="replace") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
                self.offset = handle.tell()
        except OSError:
            return []
        text = self.partial + chunk
        lines = text.split("\n")
        self.partial = lines.pop()
        return lines
