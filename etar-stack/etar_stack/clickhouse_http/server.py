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
gets SESSION_IS_LOCKED); a user's sessions are their own, at most ``Limits.max_sessions`` in
all, ``session_timeout`` an integer up to ``max_session_timeout`` (3600 s) as on a server.

A server's rules before anything reaches the engine (``guard``): paths confined to
``user_files``, remote hosts to an allow-list, multi-statements refused, ``readonly`` 0/1/2 from
the user's profile, the URL and a session's ``SET`` (enforced by the engine on the connection;
GET implies 2), a browser's cross-origin request refused with 403 before authentication, and a
non-INSERT body capped (after decompression) at ``Limits.max_query_bytes``.

An insert's body streams into the engine while it arrives, read and
decompressed in the insert's worker thread, never on the event loop (``body``).

What clickhouse-connect relies on beyond plain queries: ``X-ClickHouse-Summary`` on every
response (``X-ClickHouse-Format`` only with a result); ``X-ClickHouse-Timezone`` from
``session_timezone``; multipart/form-data bodies (``form``: the query, parameters and settings as
fields, file parts as external tables, ``external``); a large result sent while its statement
runs and an error after the first byte written into it (``stream``).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
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

from etar_stack.clickhouse_http import blocks, codecs, external, form, guard, native, stream
from etar_stack.clickhouse_http.body import RECEIVE_TIMEOUT, Body
from etar_stack.clickhouse_http.engine import (
    STREAMABLE,
    STREAMED,
    Connection,
    Engine,
    EngineError,
    Readable,
    Result,
    Stats,
    first_keyword,
)
from etar_stack.clickhouse_http.guard import Guard

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
_RESULTS = frozenset({"SELECT", "WITH", "(", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS",
                      "CHECK", "KILL", "VALUES", "FROM", "TABLE"})
"""Statements with a result (``X-ClickHouse-Format`` even when empty); clickhouse-connect's
``command`` gives the others' summary."""
_SETTINGS_CLAUSE = re.compile(r"\bSETTINGS ([^()]*)$")
"""A statement's own trailing ``SETTINGS`` clause (the engine's canonical text)."""
_TIMEZONE_SETTING = re.compile(r"\bsession_timezone = '([\w/+-]*)'")
"""A time zone name (letters, digits, ``/``, ``_``, ``+``, ``-``) set by the clause."""
_READING = ("SelectWithUnionQuery", "SelectIntersectExceptQuery", "Explain", "Show", "Describe",
            "Exists", "UseQuery")
"""``EXPLAIN AST`` roots of statements that only read (``readonly`` 1 and 2 allow them)."""
_VALUES = re.compile(r"\bVALUES\b", re.I)
_INLINE = re.compile(r"^INSERT\b.* FORMAT (\w+)$", re.S)
_INSERT = re.compile(rb"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)[ \t]*(\r?\n)?", re.S | re.I)
_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.I)
_SET = re.compile(r"^\s*SET\s+(.*?)\s*;?\s*$", re.S | re.I)
_USE = re.compile(r"^\s*USE\s+`?([\w.]+)`?\s*;?\s*$", re.I)
_STATUS = {291: 403, 491: 403, 344: 403, 452: 403, 700: 403, 374: 400, 229: 413,
           40: 400, 89: 400, 271: 400, 194: 401, 516: 403, 192: 403, 193: 403, 164: 403, 373: 423,
           60: 404, 81: 404, 16: 404, 47: 404, 73: 400, 62: 400, 36: 400, 27: 400, 115: 400,
           456: 400, 457: 400, 467: 400, 26: 400, 6: 400, 38: 400, 41: 400, 53: 400, 70: 400,
           33: 400}
_CONTENT_TYPES = (("TabSeparated", "text/tab-separated-values; charset=UTF-8"),
                  ("TSV", "text/tab-separated-values; charset=UTF-8"),
                  ("CSV", "text/csv; charset=UTF-8"), ("JSON", "application/json; charset=UTF-8"),
                  ("Pretty", "text/plain; charset=UTF-8"), ("XML", "application/xml"))


@dataclass(frozen=True)
class User:
    """A user the endpoint accepts, with its profile's ``readonly`` (0, 1 or 2)."""

    name: str
    password: str
    readonly: int = 0


@dataclass(frozen=True)
class Limits:
    """A server's limits on what clients may ask of it."""

    max_query_bytes: int = 1024 * 1024
    """Largest non-INSERT body (decompressed), like a server's ``max_query_size``."""
    max_sessions: int = 100
    """Sessions open at once (all users); a new one beyond gets USER_SESSION_LIMIT_EXCEEDED."""
    max_session_timeout: int = 3600
    """Largest ``session_timeout`` (a server's ``max_session_timeout``)."""
    max_external_bytes: int = 256 * 1024 * 1024
    """Largest external data (a multipart body's files, all together)."""
    allowed_origins: frozenset[str] = frozenset()
    """Browser origins whose requests are served; any other ``Origin`` gets 403."""


@dataclass
class _Session:
    timeout: float = 60.0
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held by the one request the session serves at a time."""
    connection: Connection | None = None
    """Opened by its first statement (in a worker thread); closed when the session expires."""

    def open(self, engine: Engine, readonly: int = 0) -> Connection:
        """The session's connection; a new one starts with its user's ``readonly``."""
        if self.connection is None:
            self.connection = engine.connect(readonly)
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
    def __init__(self, limit: int = 100) -> None:
        self._items: dict[tuple[str, str], _Session] = {}
        self._guard = threading.Lock()
        self._limit = limit

    def get(self, session_id: str, timeout: float, check: bool, user: str = "") -> _Session:
        now = time.monotonic()
        key = (user, session_id)  # a session belongs to the user who opened it
        with self._guard:
            for old_key, old in list(self._items.items()):
                if now - old.last_used > old.timeout and old.lock.acquire(blocking=False):
                    del self._items[old_key]
                    old.close()
            if key not in self._items:
                if check:
                    raise EngineError(372, f"Code: 372. DB::Exception: Session {session_id} "
                                          "not found. (SESSION_NOT_FOUND)")
                if len(self._items) >= self._limit:
                    raise EngineError(700, f"Code: 700. DB::Exception: User {user or 'default'} "
                                          f"has overflown session count {self._limit}. "
                                          "(USER_SESSION_LIMIT_EXCEEDED)")
                self._items[key] = _Session(timeout=timeout)
            session = self._items[key]
            session.last_used = now
            return session

    def close_all(self, wait: float = CLOSE_WAIT) -> None:
        """Close every session's connection once its request ended (up to ``wait`` seconds
        in all); a connection still running a statement then is left open, not broken."""
        deadline = time.monotonic() + wait
        with self._guard:
            items, self._items = self._items, {}
        for (_, session_id), session in items.items():
            if session.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                try:
                    session.close()
                finally:
                    session.lock.release()
            else:
                log.warning("session %s still runs a statement: its connection is left open",
                            session_id)


def _error_response(error: EngineError, engine: Engine, query_id: str,
                    method: int | None = None, timezone: str | None = None) -> Response:
    """ClickHouse's error: the text, in native blocks when the request asked ``compress=1``."""
    text = error.message
    if "(version " not in text:
        text = f"{text} (version {engine.version})"
    body = f"{text}\n".encode()
    if method is not None:
        body = blocks.compress_block(body, method)
    return Response(body, status_code=_STATUS.get(error.code, 500), headers={
        "X-ClickHouse-Exception-Code": str(error.code), "X-ClickHouse-Query-Id": query_id,
        "X-ClickHouse-Timezone": timezone or engine.timezone,
        "X-ClickHouse-Summary": json.dumps(Stats().summary()),
        "X-ClickHouse-Server-Display-Name": engine.display_name},
        media_type="text/plain; charset=UTF-8")


def _timezone(engine: Engine, settings: dict[str, str], session: _Session | None) -> str:
    """The time zone a server reports (``X-ClickHouse-Timezone``): the request's
    ``session_timezone``, else the session's, else the server's."""
    kept = session.connection.settings if session and session.connection else {}
    return settings.get("session_timezone") or kept.get("session_timezone") or engine.timezone


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


def _authenticate(request: Request, users: list[User]) -> User:
    user = request.headers.get("x-clickhouse-user") or request.query_params.get("user")
    password = request.headers.get("x-clickhouse-key") or request.query_params.get("password")
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("basic "):
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except ValueError:
            user, password = "?", None
    user = user or "default"
    found = None
    for candidate in users:  # every candidate compared: the time says nothing of the names
        if hmac.compare_digest(user.encode(), candidate.name.encode()) & hmac.compare_digest(
                (password or "").encode(), candidate.password.encode()):
            found = candidate
    if found is None:
        raise EngineError(516, f"Code: 516. DB::Exception: {user}: Authentication failed: "
                              "password is incorrect, or there is no user with such name. "
                              "(AUTHENTICATION_FAILED)")
    return found


class _Prefixed:
    """A file-like reader yielding ``head`` and then the rest of ``tail``."""

    def __init__(self, head: bytes, tail: Readable) -> None:
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


async def _held(pieces: list[bytes], encoding: str | None,
                method: int | None) -> AsyncIterator[bytes]:
    """A whole result held in memory, encoded."""
    encode = stream.Encoder(encoding, method)
    for piece in pieces:
        if out := encode(piece):
            yield out
    if tail := encode.flush():
        yield tail


async def _live(pipe: stream.Pipe, held: list[bytes], tag: str, version: str,
                encoding: str | None, method: int | None) -> AsyncIterator[bytes]:
    """A result while its statement runs: ``held`` first, then each piece as it comes; an
    error ends it with the exception block. The statement stops when the client leaves."""
    encode = stream.Encoder(encoding, method)
    try:
        if out := b"".join(encode(piece) for piece in held) + encode.sync():
            yield out
        held.clear()
        while True:
            item = await to_thread.run_sync(pipe.get)
            if isinstance(item, stream.Done):
                break
            if isinstance(item, stream.Failed):
                text = item.error.message
                if "(version " not in text:
                    text = f"{text} (version {version})"
                log.info("a query failed after its first byte: %s", text)
                yield encode(stream.exception_block(text, tag)) + encode.sync()
                break
            if item is not None and (out := encode(item) + encode.sync()):
                yield out
        if tail := encode.flush():
            yield tail
    finally:
        pipe.close()


def _shaper(fmt: str, revision: int) -> native.Shaper | None:
    return native.Shaper(revision) if fmt == "Native" and revision > 0 else None


def _not_implemented(exc: native.Unsupported) -> EngineError:
    return EngineError(48, f"Code: 48. DB::Exception: {exc}. (NOT_IMPLEMENTED)")


def _shaped(shaper: native.Shaper) -> Callable[[bytes], bytes]:
    def shape(data: bytes) -> bytes:
        try:
            return shaper(data)
        except native.Unsupported as exc:
            raise _not_implemented(exc) from None
    return shape


def _cross_origin(request: Request, limits: Limits) -> Response | None:
    """403 for a browser's request from a page of another origin (before anything else)."""
    origin = request.headers.get("origin")
    site = request.headers.get("sec-fetch-site", "").lower()
    if origin is not None and origin in limits.allowed_origins:
        return None
    if origin is None and site in ("", "none", "same-origin"):
        return None  # not a browser, or the user's own navigation
    return PlainTextResponse("Cross-origin requests are not allowed.\n", status_code=403)


def _readonly_value(text: str) -> int:
    value = int(text)
    if value not in (0, 1, 2):
        raise EngineError(36, f"Code: 36. DB::Exception: Unexpected value of readonly: {text}. "
                              "(BAD_ARGUMENTS)")
    return value


def _readonly_error(what: str = "execute query") -> EngineError:
    return EngineError(164, f"Code: 164. DB::Exception: Cannot {what} in readonly mode. "
                            "(READONLY)")


def _session_timeout(text: str | None, limit: int) -> int:
    """A server's ``session_timeout``: whole seconds, at most ``max_session_timeout``."""
    if text is None:
        return 60
    if not re.fullmatch(r"\d{1,12}", text.strip()):
        raise EngineError(374, f"Code: 374. DB::Exception: Invalid session timeout: '{text}'. "
                               "(INVALID_SESSION_TIMEOUT)")
    value = int(text)
    if value > limit:
        raise EngineError(374, f"Code: 374. DB::Exception: Session timeout '{value}' is larger "
                               f"than max_session_timeout: {limit}. Maximum session timeout "
                               "could be modified in configuration file. "
                               "(INVALID_SESSION_TIMEOUT)")
    return value


@dataclass
class _Handover:
    """A request's session lock, once a statement streaming its result owns it."""

    session: _Session | None = None


@dataclass
class _Access:
    """Who asks and how strictly: the user's profile and the request's ``readonly``."""

    user: User
    readonly: int
    """The request's own ``readonly`` (URL parameter, 2 for GET), 0 when none."""

    def connection_readonly(self) -> int:
        """``readonly`` of a connection opened for this request alone."""
        return self.user.readonly or self.readonly


def create_app(path: str, users: list[User], guard_rules: Guard | None = None,
               limits: Limits | None = None) -> Starlette:
    """The HTTP app; the engine opens with the app and closes with it."""
    state: dict[str, Engine] = {}
    limits = limits or Limits()
    rules = guard_rules or Guard(os.path.join(path, "user_files"))
    sessions = _Sessions(limits.max_sessions)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["engine"] = Engine(path)
        guard.learn(state["engine"].table_names())
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
        refused = _cross_origin(request, limits)
        if refused is not None:
            return refused
        engine = state["engine"]
        params = request.query_params
        query_id = params.get("query_id") or str(uuid.uuid4())
        session: _Session | None = None
        locked = False
        method: int | None = None
        settings: dict[str, str] = {}
        handover = _Handover()
        try:
            user = _authenticate(request, users)
            settings = {k: v for k, v in params.items()
                        if k not in TRANSPORT_PARAMS and not k.startswith("param_")}
            if params.get("compress") == "1":
                method = blocks.LZ4  # errors about the method itself come compressed too
                method = _block_method(settings)
            guard.locked(settings)
            requested = params.get("readonly")
            readonly = _readonly_value(requested) if requested is not None else 0
            if requested is not None and user.readonly and readonly != user.readonly:
                raise _readonly_error("modify 'readonly' setting")
            if request.method == "GET" and not readonly:
                readonly = 2  # as a server: GET implies readonly=2
            access = _Access(user, readonly)
            bind = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
            # ClickHouse's precedence: a header over its URL parameter
            database = request.headers.get("x-clickhouse-database") or params.get("database")
            default_format = (request.headers.get("x-clickhouse-format")
                              or params.get("default_format") or "TabSeparated")
            revision = int(params.get("client_protocol_version") or 0)
            if params.get("session_id"):
                timeout = _session_timeout(params.get("session_timeout"),
                                           limits.max_session_timeout)
                session = sessions.get(params["session_id"], timeout,
                                       params.get("session_check") == "1", user.name)
                if not session.lock.acquire(blocking=False):
                    raise EngineError(373, f"Code: 373. DB::Exception: Session "
                                          f"{params['session_id']} is locked by a concurrent "
                                          "client. (SESSION_IS_LOCKED)")
                locked = True
            verify = not _flag(
                settings, "http_native_compression_disable_checksumming_on_decompress")
            body = Body(request, params.get("decompress") == "1", verify,
                        float(settings.get("http_receive_timeout", RECEIVE_TIMEOUT)))
            content_type = request.headers.get("content-type", "")
            if form.is_form(content_type):
                response = await body.serving(lambda: _run_form(
                    engine, request, content_type, body, settings, bind, database,
                    default_format, revision, method, session, access, handover))
            else:
                response = await body.serving(lambda: _run(
                    engine, request, params.get("query", ""), body, settings, bind, database,
                    default_format, revision, method, session, access, handover))
        except EngineError as error:
            return _error_response(error, engine, query_id, method,
                                   _timezone(engine, settings, session))
        except ValueError as error:  # a malformed number in a transport parameter
            return _error_response(EngineError(
                27, f"Code: 27. DB::Exception: {error}. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)"),
                engine, query_id, method)
        except ClientDisconnect:  # an insert it fed was cancelled: nothing of it is committed
            log.info("query %s: the client left before its request body ended", query_id)
            return Response(b"", status_code=400)  # nobody reads it
        finally:
            if locked and session is not None and handover.session is None:
                session.release()  # else the statement still streaming releases it
        response.headers["X-ClickHouse-Query-Id"] = query_id
        response.headers.setdefault("X-ClickHouse-Timezone", _timezone(engine, settings, session))
        response.headers["X-ClickHouse-Server-Display-Name"] = engine.display_name
        if params.get("session_id"):
            response.headers["X-ClickHouse-Session-Id"] = params["session_id"]
        origin = request.headers.get("origin")
        if origin and params.get("add_http_cors_header") == "1":
            response.headers["Access-Control-Allow-Origin"] = origin  # an allowed one only
        return response

    def analysed(engine: Engine, sql: str, bind: dict[str, str]) -> tuple[str, str]:
        """The engine's canonical text of ``sql`` and its AST, checked by the rules."""
        canonical, ast = engine.analyse(sql, bind)
        rules.check(canonical, ast)
        return canonical, ast

    def strict(access: _Access, session: _Session | None, ast: str,
               settings: dict[str, str]) -> None:
        """``readonly`` from the profile, the URL, GET or a session's ``SET``: only reading
        statements (and ``SET``, which the engine judges). The engine enforces it too, but
        lets an ``INSERT INTO FUNCTION`` through, and a session's connection keeps its own."""
        lasting = session.connection.readonly if session and session.connection else 0
        readonly = access.user.readonly or lasting or access.readonly
        if not readonly:
            return
        root = ast.split(" ", 1)[0].strip()
        if root != "Set" and not root.startswith(_READING):
            raise _readonly_error()
        if (session is not None and access.readonly == 1 and lasting != 1
                and not access.user.readonly and settings):
            raise _readonly_error(f"modify '{next(iter(settings))}' setting")

    async def _run_form(engine: Engine, request: Request, content_type: str, body: Body,
                        settings: dict[str, str], bind: dict[str, str], database: str | None,
                        default_format: str, revision: int, method: int | None,
                        session: _Session | None, access: _Access,
                        handover: _Handover) -> Response:
        """A multipart/form-data request: the query, its parameters and settings as form
        fields (over the URL's), external data as temporary tables of the query's own."""
        parsed = await to_thread.run_sync(form.read_form, body, content_type,
                                          limits.max_query_bytes, limits.max_external_bytes)
        try:
            fields = parsed.fields
            described = {**request.query_params, **fields}
            tables = external.tables(parsed, described)
            skip = external.parameters(described, parsed) | {"query"}
            extra = {k: v for k, v in fields.items() if k not in skip}
            added = {k: v for k, v in extra.items()
                     if k not in TRANSPORT_PARAMS and not k.startswith("param_")}
            guard.locked(added)
            settings = {k: v for k, v in settings.items() if k not in skip} | added
            bind = bind | {k[6:]: v for k, v in extra.items() if k.startswith("param_")}
            for table in tables:
                await to_thread.run_sync(external.check, table,
                                         lambda sql: analysed(engine, sql, {}))
            sql = fields.get("query") or request.query_params.get("query", "")
            return await _run(engine, request, sql, _Consumed(), settings, bind, database,
                              default_format, revision, method, session, access, handover,
                              tables)
        finally:
            parsed.close()

    async def _run(engine: Engine, request: Request, url_query: str, body: Body | _Consumed,
                   settings: dict[str, str], bind: dict[str, str], database: str | None,
                   default_format: str, revision: int, method: int | None,
                   session: _Session | None, access: _Access, handover: _Handover,
                   tables: list[external.Table] | None = None) -> Response:
        readonly = access.connection_readonly()
        head = url_query.encode() if url_query else await body.head(64 * 1024)
        insert = _INSERT.match(head)
        if insert:
            inline = head[insert.end():]
            data: _Prefixed | Body | _Consumed = _Prefixed(inline, body) if inline else body
            fmt = insert.group(2).decode()
            _check_method(request, insert.group(1).decode())
            canonical, ast = await to_thread.run_sync(
                analysed, engine, f"{insert.group(1).decode()} FORMAT {fmt}", bind)
            strict(access, session, ast, settings)
            suffix = f" FORMAT {fmt}"
            if not canonical.endswith(suffix):
                raise EngineError(62, "Code: 62. DB::Exception: Syntax error: an INSERT's data "
                                      "follows its FORMAT clause. (SYNTAX_ERROR)")
            if fmt.lower() == "values":  # data never checked: its expressions stay data
                settings = {**settings, **guard.FORCED_SETTINGS}
            return await _insert(engine, canonical[:-len(suffix)], fmt, data, settings,
                                 database, session, access)
        rest = await body.read_all(max(0, limits.max_query_bytes - len(head)))
        if url_query:
            sql = url_query + ("\n" + rest.decode() if rest.strip() else "")
        else:
            sql = (head + rest).decode()
        if not sql.strip():
            raise EngineError(62, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
        _check_method(request, sql)
        canonical, ast = await to_thread.run_sync(analysed, engine, sql, bind)
        strict(access, session, ast, settings)
        if _INLINE.match(canonical) and ast.startswith("InsertQuery"):
            statement, data_text = await to_thread.run_sync(_split_values, engine, sql,
                                                            canonical)
            if data_text.strip().rstrip(";").strip():  # its expressions: checked like a SELECT
                await to_thread.run_sync(analysed, engine, "SELECT " + data_text, bind)
            return await _insert(engine, statement, "Values",
                                 _Prefixed(data_text.encode(), _Empty()), settings, database,
                                 session, access)
        started = time.perf_counter_ns()
        if await to_thread.run_sync(_remember, engine, session, canonical, access):
            done = Stats(elapsed_ns=time.perf_counter_ns() - started)
            return Response(b"", headers={"X-ClickHouse-Summary": json.dumps(done.summary())})
        sql = canonical
        named = _FORMAT.search(sql)
        fmt = default_format
        if named:  # the engine gets the format apart, so it can stream it block by block
            sql, fmt = sql[:named.start()], named.group(1)
        shaper = _shaper(fmt, revision)

        stats = Stats()

        def run_query(sink: stream.Pipe | None = None) -> Result:
            conn = session.open(engine, access.user.readonly) if session else None
            describe = (shaper.describe if shaper is not None
                        and shaper.revision >= native.TIME_ZONE_REVISION else None)
            try:
                result = engine.execute(sql, fmt, bind, settings, database, conn,
                                        _shaped(shaper) if shaper else None, readonly, describe,
                                        external.prepare(tables) if tables else None, sink,
                                        stats)
            finally:
                if conn is not None and tables:
                    external.drop(conn, tables)
            if shaper is not None:
                try:
                    shaper.finish()
                except native.Unsupported as exc:
                    raise _not_implemented(exc) from None
            return result

        encoding = None
        if request.query_params.get("enable_http_compression") == "1":
            encoding = codecs.negotiate(request.headers.get("accept-encoding", ""))

        clause = _SETTINGS_CLAUSE.search(sql)
        zone = _TIMEZONE_SETTING.search(clause.group(1)) if clause else None

        def headers(done: Stats, size: int) -> dict[str, str]:
            named = {"X-ClickHouse-Summary": json.dumps(done.summary())}
            if zone and zone.group(1):  # the statement's own SETTINGS clause
                named["X-ClickHouse-Timezone"] = zone.group(1)
            if size or first_keyword(sql) in _RESULTS:  # as a server: only with a result
                named["X-ClickHouse-Format"] = fmt
            if encoding:
                named["Content-Encoding"] = encoding
            return named

        media_type = _content_type(fmt)
        if (fmt not in STREAMABLE or first_keyword(sql) not in STREAMED
                or request.query_params.get("wait_end_of_query") == "1"):
            result = await to_thread.run_sync(run_query)
            return StreamingResponse(_stream(result.body, encoding, method),
                                     media_type=media_type,
                                     headers=headers(result.stats, result.size))
        pipe = stream.Pipe()

        def produce() -> None:
            try:
                pipe.end(stream.Done(run_query(pipe).stats))
            except EngineError as error:
                pipe.end(stream.Failed(error))
            except Exception as exc:
                pipe.end(stream.Failed(EngineError.from_engine(exc)))
            finally:
                if session is not None:
                    session.release()  # handed over below: the statement ended

        if session is not None:
            handover.session = session
        threading.Thread(target=produce, name="clickhouse-query", daemon=True).start()
        held: list[bytes] = []
        size, first = 0, 0.0
        try:
            while True:
                item = await to_thread.run_sync(pipe.get)
                if isinstance(item, stream.Failed):
                    raise item.error
                if isinstance(item, stream.Done):
                    pipe.close()
                    return StreamingResponse(_held(held, encoding, method),
                                             media_type=media_type,
                                             headers=headers(item.stats, size))
                if item is not None:
                    held.append(item)
                    size += len(item)
                    first = first or time.monotonic()
                if held and (size >= stream.STREAM_AFTER_BYTES
                             or time.monotonic() - first >= stream.STREAM_AFTER_SECONDS):
                    break
        except BaseException:
            pipe.close()
            raise
        tag = stream.new_tag()
        return StreamingResponse(
            _live(pipe, held, tag, engine.version, encoding, method), media_type=media_type,
            headers={**headers(stats, size), "X-ClickHouse-Exception-Tag": tag})

    async def _insert(engine: Engine, statement: str, fmt: str,
                      data: _Prefixed | Body | _Consumed,
                      settings: dict[str, str], database: str | None,
                      session: _Session | None, access: _Access) -> Response:
        def run_insert() -> Stats:
            conn = session.open(engine, access.user.readonly) if session else None
            return engine.insert(statement, fmt, data, settings, database, conn,
                                 access.connection_readonly())

        stats = await to_thread.run_sync(run_insert)  # reads the body as it arrives
        return Response(b"", headers={"X-ClickHouse-Summary": json.dumps(stats.summary())})

    return Starlette(routes=[
        Route("/", query, methods=["GET", "POST"]),
        Route("/ping", ping, methods=["GET", "HEAD"]),
        Route("/replicas_status", ping, methods=["GET"]),
    ], lifespan=lifespan)


class _Consumed:
    """A request body already read (a form's): nothing more in it."""

    def read(self, size: int = -1, /) -> bytes:
        return b""

    async def head(self, size: int) -> bytes:
        return b""

    async def read_all(self, limit: int | None = None) -> bytes:
        return b""


class _Empty:
    """A body with nothing (more) in it."""

    def read(self, size: int = -1, /) -> bytes:
        return b""


def _split_values(engine: Engine, sql: str, canonical: str) -> tuple[str, str]:
    """``INSERT … VALUES <data>`` in the query text: the statement and its data, split where
    the engine reads the same statement; the data then goes in as data, never as SQL."""
    for match in _VALUES.finditer(sql):
        try:
            again, _ = engine.analyse(sql[:match.start()] + " FORMAT Values")
        except EngineError:
            continue
        if again == canonical:
            return canonical.removesuffix(" FORMAT Values"), sql[match.end():]
    raise EngineError(62, "Code: 62. DB::Exception: Syntax error: send an INSERT's data after "
                          "`INSERT … FORMAT <format>` or `VALUES`. (SYNTAX_ERROR)")


def _check_method(request: Request, sql: str) -> None:
    if request.method == "GET" and first_keyword(sql) not in _READ_ONLY:
        raise EngineError(164, "Code: 164. DB::Exception: Cannot execute query in readonly "
                              "mode. For queries over HTTP, method GET implies readonly. You "
                              "should use method POST for modifying queries. (READONLY)")


def _remember(engine: Engine, session: _Session | None, sql: str, access: _Access) -> bool:
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
            session.open(engine, access.user.readonly).use(use.group(1))
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
    guard.locked(assignments)
    if access.readonly and "readonly" in assignments:
        raise _readonly_error("modify 'readonly' setting")
    if session is not None:
        session.open(engine, access.user.readonly).keep(assignments)
    else:
        engine.check_settings(assignments, access.connection_readonly())
    return True
