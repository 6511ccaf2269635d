"""Dashboard API: reports in (POST /report, bearer token), reports out (GET /report[s]).

The API owns the report store: recent minutes in a bounded in-memory deque. The reports in
the bucket are the record, the store a view of them: at start-up the served ``app`` reloads
the newest ``ETAR_DASHBOARD_HISTORY`` of them (``etar.report.minute_report.bucket_history``,
one hour's prefix at a time), retrying in the background while S3 is unreachable, so a restart
keeps the history. Bodies are strict JSON: ``NaN`` / ``Infinity`` get 422.
``/notebooks/<minute>`` lists the notebooks the replay DAG executed for a minute
(``etar.orchestration.replay.published``) and ``/notebooks/<minute>/<notebook>`` serves one as
HTML, from ``Settings.notebook_runs_dir``.

    uvicorn dashboard.api:app --port 8000

(No ``from __future__ import annotations`` here: FastAPI reads the route signatures.)
"""

import hmac
import logging
import pathlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import asdict
from threading import Lock
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from etar.config import Settings, get_settings
from etar.errors import ConfigError
from etar.minute import InvalidMinute, Minute
from etar.orchestration.replay import STAGES, published
from etar.report.minute_report import MinuteReport, bucket_history, loads_strict
from etar.security import require_secrets

log = logging.getLogger("dashboard.api")

MAX_BODY = 64 * 1024
"""Largest request body accepted (a minute's report is about 1 KB); larger ones get 413."""

bearer = HTTPBearer(auto_error=False)


class ReportStore:
    """The most recent reports, one per minute, oldest first, at most ``size``."""

    def __init__(self, size: int) -> None:
        self._reports: deque[MinuteReport] = deque(maxlen=size)
        self._lock = Lock()

    def add(self, report: MinuteReport) -> None:
        """Keep ``report``, replacing an earlier one of the same minute (re-runs)."""
        with self._lock:
            kept = [r for r in self._reports if r.minute != report.minute] + [report]
            kept.sort(key=lambda r: r.minute)
            self._reports.clear()
            self._reports.extend(kept)

    def preload(self, reports: Iterable[MinuteReport]) -> int:
        """Add reports of minutes not held yet (a report posted since start-up is newer than
        the bucket's copy); the newest ``size`` are kept. Returns how many were added."""
        with self._lock:
            held = {r.minute for r in self._reports}
            added = [r for r in reports if r.minute not in held]
            kept = sorted([*self._reports, *added], key=lambda r: r.minute)
            self._reports.clear()
            self._reports.extend(kept)
        return len(added)

    def latest(self) -> MinuteReport | None:
        with self._lock:
            return self._reports[-1] if self._reports else None

    def recent(self, limit: int | None = None) -> list[MinuteReport]:
        with self._lock:
            items = list(self._reports)
        return items[-limit:] if limit else items

    def __len__(self) -> int:
        return len(self._reports)


class HistoryLoader:
    """Reloads the store from the bucket once, in a thread, retrying while S3 is unreachable
    (1 s, 2 s, … up to 30 s apart) until it succeeds or the app stops."""

    def __init__(self, store: ReportStore, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.state = "loading"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="history-loader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                reports = bucket_history(self.settings.dashboard_history, self.settings)
            except Exception as exc:  # S3 down or refusing: the API serves meanwhile
                log.warning("history not reloaded from s3://%s yet (%s); retrying in %.0f s",
                            self.settings.s3_bucket, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            added = self.store.preload(reports)
            self.state = "loaded"
            log.warning("history reloaded: %d report(s) from s3://%s", added,
                        self.settings.s3_bucket)
            return


class StrictJsonRequest(Request):
    """A request whose JSON body is parsed by ``loads_strict`` (no NaN / Infinity): FastAPI
    turns its ``JSONDecodeError`` into a 422 naming the token."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """Routes that read their bodies as :class:`StrictJsonRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by Content-Length or as they
    stream in (chunked), before anything parses them (at most ``limit`` bytes are held)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay(message, receive), send)
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay(whole, receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": f"request body larger than {self.limit} bytes"},
                                status_code=status.HTTP_413_CONTENT_TOO_LARGE)
        await response(scope, receive, send)


def _replay(first: Message, receive: Receive) -> Receive:
    """A receive channel that gives ``first`` once, then the real channel's messages."""
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def create_app(settings: Settings | None = None, *, reload_history: bool = False) -> FastAPI:
    """The API for ``settings`` (token, history size); routes only wire the store.

    ``reload_history``: at start-up, reload the store from the reports in the bucket (the
    served ``app`` does; in-process tests need no S3). Refuses (ConfigError) to serve a
    non-loopback ``bind_host`` with the default token or an empty one.
    """
    settings = settings or get_settings()
    require_secrets(settings, settings.bind_host, "dashboard_token")
    store = ReportStore(settings.dashboard_history)
    loader = HistoryLoader(store, settings) if reload_history else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if loader is not None:
            loader.start()
        yield
        if loader is not None:
            loader.stop()

    app = FastAPI(title="etar dashboard API", version="1", lifespan=lifespan,
                  description="Minute reports of the etar pipeline, kept in memory and "
                              "reloaded from the bucket's reports at start-up.")
    app.router.route_class = StrictJsonRoute
    app.add_middleware(BodyLimit, limit=MAX_BODY)

    def authorized(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        token = settings.dashboard_token.get_secret_value().encode()
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(),
                                                          token):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """FastAPI's errors, with a 405's ``Allow`` listing every method of the path."""
        headers = dict(exc.headers or {})
        if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
            methods = {m for route in app.routes if isinstance(route, APIRoute)
                       and route.path == request.url.path for m in route.methods}
            headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=headers)

    @app.post("/report", status_code=status.HTTP_201_CREATED,
              dependencies=[Depends(authorized)],
              responses={400: {"description": "the body cannot be read"},
                         401: {"description": "missing or wrong bearer token"},
                         413: {"description": f"a body over {MAX_BODY} bytes"}})
    def post_report(report: MinuteReport) -> dict[str, object]:
        """Keep a minute's report (a re-sent minute replaces the earlier one)."""
        store.add(report)
        return {"accepted": report.minute, "reports": len(store)}

    @app.get("/report", response_model=MinuteReport,
             responses={204: {"description": "no report has been posted yet"}})
    def latest_report() -> MinuteReport | Response:
        """The most recent minute's report; 204 No Content before the first one."""
        latest = store.latest()
        return latest if latest is not None else Response(status_code=204)

    @app.get("/reports")
    def recent_reports(
        limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    ) -> list[MinuteReport]:
        """Recent reports, oldest first (at most ETAR_DASHBOARD_HISTORY)."""
        return store.recent(limit)

    def run_folder(minute: str) -> pathlib.Path:
        """The minute's folder of executed notebooks; 422 for a malformed minute."""
        try:
            stem = Minute.from_object_name(f"{minute}.ipynb").stem
        except InvalidMinute:
            raise RequestValidationError([{
                "loc": ("path", "minute"), "type": "value_error", "input": minute,
                "msg": f"{minute!r} is not a minute (YYYY-MM-DD_HH-MM, UTC)"}]) from None
        return settings.notebook_runs_dir / stem

    @app.get("/notebooks/{minute}")
    def minute_notebooks(
        minute: Annotated[str, Path(description="the minute, YYYY-MM-DD_HH-MM (UTC)")],
        request: Request,
    ) -> list[dict[str, object]]:
        """The notebooks the replay DAG executed for ``minute``, in stage order (empty when it
        was not replayed): how each ended (a failure names its cell) and its HTML's URL."""
        folder = run_folder(minute)
        return [{**asdict(run), "url": settings.dashboard_links_url + request.url_for(
                    "notebook_html", minute=folder.name, notebook=run.notebook).path}
                for run in published(folder)]

    @app.get("/notebooks/{minute}/{notebook}", response_class=HTMLResponse,
             name="notebook_html", responses={404: {"description": "not executed"}})
    def notebook_html(minute: str, notebook: str) -> HTMLResponse:
        """One executed notebook of ``minute`` as HTML (``03_extract``, ``04_analyze``,
        ``05_report``)."""
        folder = run_folder(minute)
        page = folder / f"{notebook}.html"
        if f"{notebook}.ipynb" not in STAGES or not page.is_file():
            raise HTTPException(status.HTTP_404_NOT_FOUND,
                                f"no executed notebook {notebook!r} for {minute}")
        return HTMLResponse(page.read_text(encoding="utf-8"))

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        """Alive; ``history`` is ``loading`` until the bucket's reports are reloaded, then
        ``loaded`` (``off`` when this app does not reload)."""
        return {"status": "ok", "reports": len(store), "capacity": settings.dashboard_history,
                "history": loader.state if loader is not None else "off"}

    return app


def _served() -> FastAPI:
    """The app uvicorn serves; a refused configuration ends the process with one line."""
    try:
        return create_app(reload_history=True)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None


app = _served()
