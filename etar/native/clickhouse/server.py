"""ClickHouse's HTTP interface over the chdb engine, for clickhouse-connect and curl users.

Follows https://clickhouse.com/docs/interfaces/http: the query in the ``query`` URL
parameter and/or the body; ``INSERT … FORMAT <fmt>`` followed by data in the body (any input
format, Native and RowBinary included); compressed request bodies (``Content-Encoding``) and
compressed responses (``enable_http_compression=1`` + ``Accept-Encoding``); ``database``,
``default_format``, ``query_id``, ``session_id``, ``param_<name>`` and any other parameter as
a setting; errors as ClickHouse sends them. GET is read-only, as in ClickHouse.

Sessions keep their ``SET`` settings and ``USE`` database between requests; temporary tables
are shared by all clients, since one chdb connection serves everyone.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import IO

from anyio import to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from etar.native.clickhouse import codecs
from etar.native.clickhouse.engine import SPOOL_BYTES, Engine, EngineError, first_keyword

log = logging.getLogger(__name__)

TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "query_id", "session_id", "session_timeout",
    "session_check", "user", "password", "quota_key", "compress", "decompress",
    "enable_http_compression", "http_zlib_compression_level", "wait_end_of_query",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms", "buffer_size",
    "http_response_buffer_size", "cancel_http_readonly_queries_on_client_close",
    "add_http_cors_header", "readonly", "client_protocol_version", "role",
})
_READ_ONLY = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS", "(",
                        "SET", "USE"})
_INSERT = re.compile(rb"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)[ \t]*(\r?\n)?", re.S | re.I)
_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.I)
_SET = re.compile(r"^\s*SET\s+(.*?)\s*;?\s*$", re.S | re.I)
_USE = re.compile(r"^\s*USE\s+`?([\w.]+)`?\s*;?\s*$", re.I)
_STATUS = {194: 401, 516: 403, 192: 403, 193: 403, 164: 403, 373: 423,
           60: 404, 81: 404, 16: 404, 47: 404, 73: 400, 62: 400, 36: 400, 27: 400, 115: 400,
           456: 400, 457: 400, 26: 400, 6: 400, 38: 400, 41: 400, 53: 400, 70: 400, 33: 400}
_CONTENT_TYPES = (("TabSeparated", "text/tab-separated-values; charset=UTF-8"),
                  ("TSV", "text/tab-separated-values; charset=UTF-8"),
                  ("CSV", "text/csv; charset=UTF-8"), ("JSON", "application/json; charset=UTF-8"),
                  ("Pretty", "text/plain; charset=UTF-8"), ("XML", "application/xml"))


@dataclass
class Credentials:
    """The one user the endpoint accepts."""

    user: str
    password: str


@dataclass
class _Session:
    settings: dict[str, str] = field(default_factory=dict)
    database: str | None = None
    timeout: float = 60.0
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Sessions:
    def __init__(self) -> None:
        self._items: dict[str, _Session] = {}
        self._guard = threading.Lock()

    def get(self, session_id: str, timeout: float, check: bool) -> _Session:
        now = time.monotonic()
        with self._guard:
            for key in [k for k, s in self._items.items() if now - s.last_used > s.timeout]:
                del self._items[key]
            if session_id not in self._items:
                if check:
                    raise EngineError(372, f"Code: 372. DB::Exception: Session {session_id} "
                                          "not found. (SESSION_NOT_FOUND)")
                self._items[session_id] = _Session(timeout=timeout)
            session = self._items[session_id]
            session.last_used = now
            return session


def _error_response(error: EngineError, engine: Engine, query_id: str) -> Response:
    text = error.message
    if "(version " not in text:
        text = f"{text} (version {engine.version})"
    return PlainTextResponse(f"{text}\n", status_code=_STATUS.get(error.code, 500), headers={
        "X-ClickHouse-Exception-Code": str(error.code), "X-ClickHouse-Query-Id": query_id,
        "X-ClickHouse-Timezone": engine.timezone})


def _content_type(fmt: str) -> str:
    for prefix, content_type in _CONTENT_TYPES:
        if fmt.startswith(prefix):
            return content_type
    return "application/octet-stream"


def _authenticate(request: Request, credentials: Credentials) -> None:
    user = request.headers.get("x-clickhouse-user") or request.query_params.get("user")
    password = request.headers.get("x-clickhouse-key") or request.query_params.get("password")
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("basic "):
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except ValueError:
            user, password = "?", None
    user = user or "default"
    ok = hmac.compare_digest(user.encode(), credentials.user.encode()) and hmac.compare_digest(
        (password or "").encode(), credentials.password.encode())
    if not ok:
        raise EngineError(516, f"Code: 516. DB::Exception: {user}: Authentication failed: "
                              "password is incorrect, or there is no user with such name. "
                              "(AUTHENTICATION_FAILED)")


async def _read_body(request: Request) -> IO[bytes]:
    """The request body, decompressed per ``Content-Encoding``, spooled and rewound."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
    encoding = request.headers.get("content-encoding")
    try:
        decoder = codecs.decoder(encoding) if encoding else None
    except ValueError as exc:
        raise EngineError(
            36, f"Code: 36. DB::Exception: {exc}. (BAD_ARGUMENTS)") from None
    try:
        async for chunk in request.stream():
            spool.write(decoder.decompress(chunk) if decoder else chunk)
    except (OSError, ValueError, RuntimeError) as exc:
        spool.close()
        raise EngineError(
            354, f"Code: 354. DB::Exception: Cannot decompress the body ({encoding}): {exc}. "
            "(CANNOT_DECOMPRESS)") from None
    spool.seek(0)
    return spool  # type: ignore[return-value]


class _Prefixed:
    """A file-like reader yielding ``head`` and then the rest of ``tail``."""

    def __init__(self, head: bytes, tail: IO[bytes]) -> None:
        self._head, self._tail = head, tail

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        return self._tail.read(size)


def _stream(body: IO[bytes], encoding: str | None) -> Iterator[bytes]:
    encoder = codecs.encoder(encoding) if encoding else None
    try:
        while chunk := body.read(256 * 1024):
            yield encoder.compress(chunk) if encoder else chunk
        if encoder:
            yield encoder.flush()
    finally:
        body.close()


def create_app(path: str, credentials: Credentials) -> Starlette:
    """The HTTP app; the engine opens with the app and closes with it."""
    state: dict[str, Engine] = {}
    sessions = _Sessions()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["engine"] = Engine(path)
        log.info("ClickHouse %s engine open on %s", state["engine"].version, path)
        try:
            yield
        finally:
            state.pop("engine").close()
            log.info("engine closed")

    async def ping(request: Request) -> Response:
        return PlainTextResponse("Ok.\n")

    async def query(request: Request) -> Response:
        engine = state["engine"]
        params = request.query_params
        query_id = params.get("query_id") or str(uuid.uuid4())
        session: _Session | None = None
        body: IO[bytes] | None = None
        try:
            _authenticate(request, credentials)
            if params.get("compress") == "1" or params.get("decompress") == "1":
                raise EngineError(48, "Code: 48. DB::Exception: ClickHouse's native block "
                                      "compression (compress/decompress=1) is not served here; "
                                      "use HTTP compression. (NOT_IMPLEMENTED)")
            settings = {k: v for k, v in params.items()
                        if k not in TRANSPORT_PARAMS and not k.startswith("param_")}
            bind = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
            database = params.get("database")
            if params.get("session_id"):
                session = sessions.get(params["session_id"],
                                       float(params.get("session_timeout", 60)),
                                       params.get("session_check") == "1")
                if not session.lock.acquire(blocking=False):
                    raise EngineError(373, f"Code: 373. DB::Exception: Session "
                                          f"{params['session_id']} is locked by a concurrent "
                                          "client. (SESSION_IS_LOCKED)")
                settings = {**session.settings, **settings}
                database = database or session.database
            body = await _read_body(request)
            response = await _run(engine, request, params.get("query", ""), body, settings,
                                  bind, database, session)
        except EngineError as error:
            if body is not None:
                body.close()
            return _error_response(error, engine, query_id)
        finally:
            if session is not None and session.lock.locked():
                session.lock.release()
        response.headers["X-ClickHouse-Query-Id"] = query_id
        response.headers["X-ClickHouse-Timezone"] = engine.timezone
        response.headers["X-ClickHouse-Server-Display-Name"] = "etar-chdb"
        if params.get("session_id"):
            response.headers["X-ClickHouse-Session-Id"] = params["session_id"]
        return response

    async def _run(engine: Engine, request: Request, url_query: str, body: IO[bytes],
                   settings: dict[str, str], bind: dict[str, str], database: str | None,
                   session: _Session | None) -> Response:
        head = url_query.encode() if url_query else body.read(64 * 1024)
        insert = _INSERT.match(head)
        if insert:
            inline = head[insert.end():]
            data = _Prefixed(inline, body)
            statement, fmt = insert.group(1).decode(), insert.group(2).decode()
            _check_method(request, statement)
            stats = await to_thread.run_sync(engine.insert, statement, fmt, data, settings,
                                             database)
            body.close()
            return Response(b"", headers={"X-ClickHouse-Summary": json.dumps(stats.summary())})
        rest = body.read()
        body.close()
        if url_query:
            sql = url_query + ("\n" + rest.decode() if rest.strip() else "")
        else:
            sql = (head + rest).decode()
        if not sql.strip():
            raise EngineError(62, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
        _check_method(request, sql)
        if await to_thread.run_sync(_remember, engine, session, sql):
            return Response(b"")
        named = _FORMAT.search(sql)
        fmt = request.query_params.get("default_format", "TabSeparated")
        if named:  # the engine gets the format apart, so it can stream it block by block
            sql, fmt = sql[:named.start()], named.group(1)
        result = await to_thread.run_sync(engine.execute, sql, fmt, bind, settings, database)
        encoding = None
        if request.query_params.get("enable_http_compression") == "1":
            encoding = codecs.negotiate(request.headers.get("accept-encoding", ""))
        headers = {"X-ClickHouse-Format": fmt,
                   "X-ClickHouse-Summary": json.dumps(result.stats.summary())}
        if encoding:
            headers["Content-Encoding"] = encoding
        return StreamingResponse(_stream(result.body, encoding), media_type=_content_type(fmt),
                                 headers=headers)

    return Starlette(routes=[
        Route("/", query, methods=["GET", "POST"]),
        Route("/ping", ping, methods=["GET", "HEAD"]),
        Route("/replicas_status", ping, methods=["GET"]),
    ], lifespan=lifespan)


def _check_method(request: Request, sql: str) -> None:
    if request.method == "GET" and first_keyword(sql) not in _READ_ONLY:
        raise EngineError(164, "Code: 164. DB::Exception: Cannot execute query in readonly "
                              "mode. For queries over HTTP, method GET implies readonly. You "
                              "should use method POST for modifying queries. (READONLY)")


def _remember(engine: Engine, session: _Session | None, sql: str) -> bool:
    """Validate a ``SET`` / ``USE`` and keep it for the session's later requests.

    True when ``sql`` was one. Without a session it has no lasting effect, as in ClickHouse:
    it must never reach the engine, whose one connection serves every client.
    """
    use = _USE.match(sql)
    if use:
        result = engine.execute(f"EXISTS DATABASE `{use.group(1)}`", "TabSeparated")
        if result.body.read().strip() != b"1":
            raise EngineError(81, f"Code: 81. DB::Exception: Database {use.group(1)} does "
                                  "not exist. (UNKNOWN_DATABASE)")
        if session is not None:
            session.database = use.group(1)
        return True
    match = _SET.match(sql)
    if not match or first_keyword(sql) != "SET":
        return False
    assignments: dict[str, str] = {}
    for item in re.split(r",(?=(?:[^']*'[^']*')*[^']*$)", match.group(1)):
        name, _, value = item.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1].replace("\\'", "'").replace("\\\\", "\\")
        assignments[name.strip().strip("`")] = value
    engine.check_settings(assignments)
    if session is not None:
        session.settings.update(assignments)
    return True
