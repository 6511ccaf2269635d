"""ClickHouse's HTTP interface over the chdb engine, for clickhouse-connect and curl users.

Follows https://clickhouse.com/docs/interfaces/http: the query in the ``query`` URL
parameter and/or the body; ``INSERT … FORMAT <fmt>`` followed by data in the body (any input
format, Native and RowBinary included); compressed request bodies (``Content-Encoding``) and
compressed responses (``enable_http_compression=1`` + ``Accept-Encoding``); ``database``,
``default_format``, ``query_id``, ``session_id``, ``param_<name>`` and any other parameter as
a setting; errors as ClickHouse sends them. GET is read-only, as in ClickHouse.

ClickHouse's request headers as it reads them: ``X-ClickHouse-Format`` over ``default_format``
and ``X-ClickHouse-Database`` over ``database`` (the query's own ``FORMAT`` clause over both),
``X-ClickHouse-User`` / ``X-ClickHouse-Key``; ``X-ClickHouse-Quota`` is ignored. Native block
compression (``decompress=1`` bodies, ``compress=1`` responses; ``blocks``) and Native output
shaped by ``client_protocol_version`` (``native``) serve the JDBC and Go drivers.

Sessions have a connection of their own, so ``SET`` settings, the ``USE`` database and
temporary tables last between their requests; one request at a time per session (a second
gets SESSION_IS_LOCKED). An insert's body streams into the engine while it arrives, read and
decompressed in the insert's worker thread, never on the event loop (``body``).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import IO

from anyio import to_thread
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from etar.native.clickhouse import blocks, codecs, native
from etar.native.clickhouse.body import RECEIVE_TIMEOUT, Body
from etar.native.clickhouse.engine import (
    Connection,
    Engine,
    EngineError,
    Result,
    Stats,
    first_keyword,
)

log = logging.getLogger(__name__)

TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "query_id", "session_id", "session_timeout",
    "session_check", "user", "password", "quota_key", "compress", "decompress",
    "enable_http_compression", "http_zlib_compression_level", "wait_end_of_query",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms", "buffer_size",
    "http_response_buffer_size", "cancel_http_readonly_queries_on_client_close",
    "add_http_cors_header", "readonly", "client_protocol_version", "role", "close_session",
})
CLOSE_WAIT = 10.0
"""Seconds shutting down waits for the sessions' running statements."""
_READ_ONLY = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS", "(",
                        "SET", "USE"})
_INSERT = re.compile(rb"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)[ \t]*(\r?\n)?", re.S | re.I)
_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.I)
_SET = re.compile(r"^\s*SET\s+(.*?)\s*;?\s*$", re.S | re.I)
_USE = re.compile(r"^\s*USE\s+`?([\w.]+)`?\s*;?\s*$", re.I)
_STATUS = {40: 400, 89: 400, 271: 400, 194: 401, 516: 403, 192: 403, 193: 403, 164: 403, 373: 423,
           60: 404, 81: 404, 16: 404, 47: 404, 73: 400, 62: 400, 36: 400, 27: 400, 115: 400,
           456: 400, 457: 400, 467: 400, 26: 400, 6: 400, 38: 400, 41: 400, 53: 400, 70: 400,
           33: 400}
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
    timeout: float = 60.0
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held by the one request the session serves at a time."""
    connection: Connection | None = None
    """Opened by its first statement (in a worker thread); closed when the session expires."""

    def open(self, engine: Engine) -> Connection:
        if self.connection is None:
            self.connection = engine.connect()
        return self.connection

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def release(self) -> None:
        """End the request holding the session: its timeout counts from now."""
        self.last_used = time.monotonic()
        self.lock.release()


class _Sessions:
    def __init__(self) -> None:
        self._items: dict[str, _Session] = {}
        self._guard = threading.Lock()

    def get(self, session_id: str, timeout: float, check: bool) -> _Session:
        now = time.monotonic()
        with self._guard:
            for key, old in list(self._items.items()):
                if now - old.last_used > old.timeout and old.lock.acquire(blocking=False):
                    del self._items[key]
                    old.close()
            if session_id not in self._items:
                if check:
                    raise EngineError(372, f"Code: 372. DB::Exception: Session {session_id} "
                                          "not found. (SESSION_NOT_FOUND)")
                self._items[session_id] = _Session(timeout=timeout)
            session = self._items[session_id]
            session.last_used = now
            return session

    def close_all(self, wait: float = CLOSE_WAIT) -> None:
        """Close every session's connection once its request ended (up to ``wait`` seconds
        in all); a connection still running a statement then is left open, not broken."""
        deadline = time.monotonic() + wait
        with self._guard:
            items, self._items = self._items, {}
        for session_id, session in items.items():
            if session.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                try:
                    session.close()
                finally:
                    session.lock.release()
            else:
                log.warning("session %s still runs a statement: its connection is left open",
                            session_id)


def _error_response(error: EngineError, engine: Engine, query_id: str,
                    method: int | None = None) -> Response:
    """ClickHouse's error: the text, in native blocks when the request asked ``compress=1``."""
    text = error.message
    if "(version " not in text:
        text = f"{text} (version {engine.version})"
    body = f"{text}\n".encode()
    if method is not None:
        body = blocks.compress_block(body, method)
    return Response(body, status_code=_STATUS.get(error.code, 500), headers={
        "X-ClickHouse-Exception-Code": str(error.code), "X-ClickHouse-Query-Id": query_id,
        "X-ClickHouse-Timezone": engine.timezone,
        "X-ClickHouse-Server-Display-Name": engine.display_name},
        media_type="text/plain; charset=UTF-8")


def _block_method(settings: dict[str, str]) -> int:
    """The method of ``compress=1`` responses: ``network_compression_method``, LZ4 by default."""
    name = settings.get("network_compression_method", "lz4").strip().lower()
    if name not in blocks.METHODS:
        raise EngineError(89, f"Code: 89. DB::Exception: Unknown compression method: {name}. "
                              "(UNKNOWN_COMPRESSION_METHOD)")
    return blocks.METHODS[name]


def _flag(settings: dict[str, str], name: str) -> bool:
    """A boolean setting as ClickHouse parses it: 0, 1, true or false (any case)."""
    value = settings.get(name, "0")
    if value in ("0", "1") or value.lower() in ("true", "false"):
        return value == "1" or value.lower() == "true"
    raise EngineError(467, f"Code: 467. DB::Exception: Cannot parse bool from string "
                           f"'{value}'. (CANNOT_PARSE_BOOL)")


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


class _Prefixed:
    """A file-like reader yielding ``head`` and then the rest of ``tail``."""

    def __init__(self, head: bytes, tail: Body) -> None:
        self._head, self._tail = head, tail

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        return self._tail.read(size)


def _stream(body: IO[bytes], encoding: str | None, method: int | None) -> Iterator[bytes]:
    """The spooled result, in native blocks (``method``) and/or HTTP-compressed."""
    packer = blocks.BlockEncoder(method) if method is not None else None
    encoder = codecs.encoder(encoding) if encoding else None
    try:
        while chunk := body.read(256 * 1024):
            if packer:
                chunk = packer.compress(chunk)
            if encoder and chunk:
                chunk = encoder.compress(chunk)
            if chunk:
                yield chunk
        tail = packer.flush() if packer else b""
        if encoder:
            tail = (encoder.compress(tail) if tail else b"") + encoder.flush()
        if tail:
            yield tail
    finally:
        body.close()


def _shaper(fmt: str, revision: int) -> native.Shaper | None:
    return native.Shaper(revision) if fmt == "Native" and revision > 0 else None


def _shaped(shaper: native.Shaper) -> Callable[[bytes], bytes]:
    def shape(data: bytes) -> bytes:
        try:
            return shaper(data)
        except native.Unsupported as exc:
            raise EngineError(48, f"Code: 48. DB::Exception: {exc}. (NOT_IMPLEMENTED)") from None
    return shape


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
            await to_thread.run_sync(sessions.close_all)  # their locks free on the loop
            state.pop("engine").close()
            log.info("engine closed")

    async def ping(request: Request) -> Response:
        return PlainTextResponse("Ok.\n")

    async def query(request: Request) -> Response:
        engine = state["engine"]
        params = request.query_params
        query_id = params.get("query_id") or str(uuid.uuid4())
        session: _Session | None = None
        locked = False
        method: int | None = None
        try:
            _authenticate(request, credentials)
            settings = {k: v for k, v in params.items()
                        if k not in TRANSPORT_PARAMS and not k.startswith("param_")}
            if params.get("compress") == "1":
                method = blocks.LZ4  # errors about the method itself come compressed too
                method = _block_method(settings)
            bind = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
            # ClickHouse's precedence: a header over its URL parameter
            database = request.headers.get("x-clickhouse-database") or params.get("database")
            default_format = (request.headers.get("x-clickhouse-format")
                              or params.get("default_format") or "TabSeparated")
            revision = int(params.get("client_protocol_version") or 0)
            if params.get("session_id"):
                session = sessions.get(params["session_id"],
                                       float(params.get("session_timeout", 60)),
                                       params.get("session_check") == "1")
                if not session.lock.acquire(blocking=False):
                    raise EngineError(373, f"Code: 373. DB::Exception: Session "
                                          f"{params['session_id']} is locked by a concurrent "
                                          "client. (SESSION_IS_LOCKED)")
                locked = True
            verify = not _flag(
                settings, "http_native_compression_disable_checksumming_on_decompress")
            body = Body(request, params.get("decompress") == "1", verify,
                        float(settings.get("http_receive_timeout", RECEIVE_TIMEOUT)))
            response = await body.serving(lambda: _run(
                engine, request, params.get("query", ""), body, settings, bind, database,
                default_format, revision, method, session))
        except EngineError as error:
            return _error_response(error, engine, query_id, method)
        except ValueError as error:  # a malformed number in a transport parameter
            return _error_response(EngineError(
                27, f"Code: 27. DB::Exception: {error}. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)"),
                engine, query_id, method)
        except ClientDisconnect:  # an insert it fed was cancelled: nothing of it is committed
            log.info("query %s: the client left before its request body ended", query_id)
            return Response(b"", status_code=400)  # nobody reads it
        finally:
            if locked and session is not None:
                session.release()
        response.headers["X-ClickHouse-Query-Id"] = query_id
        response.headers["X-ClickHouse-Timezone"] = engine.timezone
        response.headers["X-ClickHouse-Server-Display-Name"] = engine.display_name
        if params.get("session_id"):
            response.headers["X-ClickHouse-Session-Id"] = params["session_id"]
        return response

    async def _run(engine: Engine, request: Request, url_query: str, body: Body,
                   settings: dict[str, str], bind: dict[str, str], database: str | None,
                   default_format: str, revision: int, method: int | None,
                   session: _Session | None) -> Response:
        head = url_query.encode() if url_query else await body.head(64 * 1024)
        insert = _INSERT.match(head)
        if insert:
            inline = head[insert.end():]
            data = _Prefixed(inline, body) if inline else body
            statement, fmt = insert.group(1).decode(), insert.group(2).decode()
            _check_method(request, statement)

            def run_insert() -> Stats:
                conn = session.open(engine) if session else None
                return engine.insert(statement, fmt, data, settings, database, conn)

            stats = await to_thread.run_sync(run_insert)  # reads the body as it arrives
            return Response(b"", headers={"X-ClickHouse-Summary": json.dumps(stats.summary())})
        rest = await body.read_all()
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
        fmt = default_format
        if named:  # the engine gets the format apart, so it can stream it block by block
            sql, fmt = sql[:named.start()], named.group(1)
        shaper = _shaper(fmt, revision)

        def run_query() -> Result:
            conn = session.open(engine) if session else None
            result = engine.execute(sql, fmt, bind, settings, database, conn,
                                    _shaped(shaper) if shaper else None)
            if shaper is not None:
                shaper.finish()
            return result

        result = await to_thread.run_sync(run_query)
        encoding = None
        if request.query_params.get("enable_http_compression") == "1":
            encoding = codecs.negotiate(request.headers.get("accept-encoding", ""))
        headers = {"X-ClickHouse-Format": fmt,
                   "X-ClickHouse-Summary": json.dumps(result.stats.summary())}
        if encoding:
            headers["Content-Encoding"] = encoding
        return StreamingResponse(_stream(result.body, encoding, method),
                                 media_type=_content_type(fmt), headers=headers)

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
    """Validate a ``SET`` / ``USE`` and keep it on the session's connection.

    True when ``sql`` was one. Without a session it has no lasting effect, as in ClickHouse.
    """
    use = _USE.match(sql)
    if use:
        result = engine.execute(f"EXISTS DATABASE `{use.group(1)}`", "TabSeparated")
        if result.body.read().strip() != b"1":
            raise EngineError(81, f"Code: 81. DB::Exception: Database {use.group(1)} does "
                                  "not exist. (UNKNOWN_DATABASE)")
        if session is not None:
            session.open(engine).use(use.group(1))
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
    if session is not None:
        session.open(engine).keep(assignments)
    else:
        engine.check_settings(assignments)
    return True
