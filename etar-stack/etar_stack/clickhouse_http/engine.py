"""The one owner of the chdb data folder: runs statements for every HTTP client.

chdb hosts one engine per process; any number of connections to its folder run statements in
parallel, but each connection runs one at a time (a streaming read is broken by any other
statement on it). So a request without a session runs on a connection of its own, opened for
it and closed after, and a session has one connection that its lock serialises: a long
extract never holds up the sink's inserts. Results are spooled (memory up to ``SPOOL_BYTES``,
then a temporary file) and streamed to the client after the statement ended, or written to a
``Sink`` while it runs (``stream``). Per-request
settings and the database are applied with ``SET`` / ``USE`` and undone after on a session's
connection.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Protocol

import chdb
import pyarrow as pa

log = logging.getLogger(__name__)

SPOOL_BYTES = 32 * 1024 * 1024
INSERT_CHUNK = 8 * 1024 * 1024
"""Most bytes handed to chdb's streaming insert at a time."""
_STREAMED = ("SELECT", "WITH", "(")
"""Statements chdb can stream; the rest (SHOW, DESCRIBE, DDL…) run in one piece."""
_CONCATENABLE = frozenset({
    "Native", "RowBinary", "TabSeparated", "TSV", "TabSeparatedRaw", "TSVRaw", "CSV",
    "JSONEachRow", "JSONCompactEachRow", "JSONStringsEachRow", "JSONCompactStringsEachRow",
    "JSONLines", "NDJSON", "Values", "LineAsString", "RawBLOB"})
"""Formats without header or footer: chdb's per-block chunks simply concatenate."""
STREAMABLE = _CONCATENABLE
"""Formats a response can send while the statement runs."""
STREAMED = _STREAMED
_ARROW = frozenset({"Arrow", "ArrowStream"})
"""Re-assembled from per-block Arrow streams into one Arrow file or stream."""
_CODE = re.compile(r"Code: (\d+)\.")
_NAME = re.compile(r"\(([A-Z_]+)\)")


class EngineError(Exception):
    """An error carrying ClickHouse's exception code and message text."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def from_engine(cls, exc: BaseException) -> EngineError:
        text = str(exc).removeprefix("Streaming query failed: ").removeprefix(
            "Streaming insert finish failed: ").strip()
        match = _CODE.search(text)
        if match:
            return cls(int(match.group(1)), text[match.start():])
        return cls(1001, f"Code: 1001. DB::Exception: {text}. (STD_EXCEPTION)")


@dataclass
class Stats:
    """What ClickHouse reports in ``X-ClickHouse-Summary``."""

    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    result_rows: int = 0
    result_bytes: int = 0
    elapsed_ns: int = 0

    def summary(self) -> dict[str, str]:
        values = {name: str(value) for name, value in vars(self).items()}
        values["total_rows_to_read"] = values["read_rows"]
        return values


@dataclass
class Result:
    """A finished statement: its output (rewound, owned by the caller) and its stats."""

    body: IO[bytes]
    size: int
    stats: Stats


class Sink(Protocol):
    """Where a result streams as it is produced: ``write`` each piece, ``tell`` the total."""

    def write(self, data: bytes, /) -> int: ...

    def tell(self) -> int: ...


class Readable(Protocol):
    """Anything with ``read(size)``: a file, a request body as it arrives, a prefixed stream."""

    def read(self, size: int = -1, /) -> bytes: ...


class _ArrowJoiner:
    """Writes the batches of several Arrow IPC streams as one Arrow file or stream."""

    def __init__(self, sink: IO[bytes], fmt: str) -> None:
        self._sink, self._file = sink, fmt == "Arrow"
        self._writer: pa.ipc.RecordBatchWriter | None = None

    def add(self, data: bytes) -> None:
        reader = pa.ipc.open_stream(data)
        if self._writer is None:
            new = pa.ipc.new_file if self._file else pa.ipc.new_stream
            self._writer = new(self._sink, reader.schema)
        for batch in reader:
            self._writer.write_batch(batch)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def first_keyword(sql: str) -> str:
    """The statement's first keyword, upper-cased (comments skipped)."""
    text = re.sub(r"^(\s|--[^\n]*\n|/\*.*?\*/)*", "", sql, flags=re.S)
    if text.startswith("("):
        return "("
    match = re.match(r"[A-Za-z]+", text)
    return match.group(0).upper() if match else ""


class Connection:
    """One chdb connection: a ClickHouse session of its own, one statement at a time.

    ``settings`` and ``database`` are its lasting state (a session's ``SET`` / ``USE``);
    per-request ones are applied over them and undone after.
    """

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.settings: dict[str, str] = {}
        self.database = "default"

    def close(self) -> None:
        """Close the connection (parts already written stay intact)."""
        try:
            self._conn.close()
        except Exception as exc:  # closing must not hide the request's outcome
            log.warning("closing a connection: %s", exc)

    @contextmanager
    def applied(self, settings: Mapping[str, str], database: str | None) -> Iterator[None]:
        """Run with ``settings`` and ``database`` in force, back to the lasting state after."""
        applied: list[str] = []
        switched = bool(database) and database != self.database
        try:
            for name, value in settings.items():
                if self.settings.get(name) == str(value):
                    continue
                self._run(f"SET {_identifier(name)} = {_quote(str(value))}")
                applied.append(name)
            if switched:
                self._run(f"USE {_identifier(str(database))}")
            yield
        finally:
            for name in applied:
                if name in self.settings:
                    self._run_quietly(
                        f"SET {_identifier(name)} = {_quote(self.settings[name])}")
                else:
                    self._run_quietly(f"SET {_identifier(name)} = DEFAULT")
            if switched:
                self._run_quietly(f"USE {_identifier(self.database)}")

    def keep(self, settings: Mapping[str, str]) -> None:
        """Make ``settings`` lasting (a session's ``SET``); ClickHouse's error if one is bad."""
        with self.applied(settings, None):
            pass
        for name, value in settings.items():
            self._run(f"SET {_identifier(name)} = {_quote(str(value))}")
            self.settings[name] = str(value)

    def start(self, settings: Mapping[str, str]) -> None:
        """Make ``settings`` lasting on a new connection, in order (``readonly`` last)."""
        for name, value in settings.items():
            self._run(f"SET {_identifier(name)} = {_quote(str(value))}")
            self.settings[name] = str(value)

    @property
    def readonly(self) -> int:
        """The connection's lasting ``readonly`` (its profile's, or a session's ``SET``)."""
        return int(self.settings.get("readonly", "0") or 0)

    def use(self, database: str) -> None:
        """Make ``database`` the lasting current one (a session's ``USE``)."""
        self._run(f"USE {_identifier(database)}")
        self.database = database

    def command(self, sql: str, quiet: bool = False) -> None:
        """Run a statement of the endpoint's own (``quiet``: a failure is only logged)."""
        if quiet:
            self._run_quietly(sql)
        else:
            self._run(sql)

    def _run(self, sql: str) -> Any:
        try:
            return self._conn.query(sql, "TabSeparated")
        except Exception as exc:
            raise EngineError.from_engine(exc) from None

    def _run_quietly(self, sql: str) -> None:
        try:
            self._conn.query(sql, "TabSeparated")
        except Exception as exc:  # restoring state must not hide the real outcome
            log.warning("%s: %s", sql, exc)

    def execute(self, sql: str, fmt: str, params: Mapping[str, str] | None = None,
                settings: Mapping[str, str] | None = None, database: str | None = None,
                shape: Callable[[bytes], bytes] | None = None,
                describe: Callable[[list[str]], None] | None = None,
                sink: Sink | None = None, stats: Stats | None = None) -> Result:
        """Run one statement; its output in ``fmt`` (through ``shape`` if given) is spooled,
        or written to ``sink`` as it is produced (the result's body is then empty).
        ``describe`` is first given the result's column types of a streamed statement;
        ``stats`` (if given) is filled in while it runs."""
        spool: Any = sink if sink is not None else tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=SPOOL_BYTES)
        stats = stats if stats is not None else Stats()
        started = time.perf_counter_ns()
        try:
            with self.applied(settings or {}, database):
                streamable = fmt in _CONCATENABLE or fmt in _ARROW
                if first_keyword(sql) in _STREAMED and streamable:
                    if describe is not None:
                        describe(self.column_types(sql, params))
                    self._stream_into(spool, sql, fmt, dict(params or {}), stats, shape)
                else:
                    try:
                        result = self._conn.query(sql, fmt, params=dict(params or {}) or None)
                    except Exception as exc:
                        raise EngineError.from_engine(exc) from None
                    data = result.bytes()
                    spool.write(shape(data) if shape else data)
                    stats.written_rows = result.rows_written()
                    stats.written_bytes = result.bytes_written()
                    stats.read_rows = result.storage_rows_read()
                    stats.read_bytes = result.storage_bytes_read()
                    stats.result_bytes = len(data)
        except BaseException:
            if sink is None:
                spool.close()
            raise
        stats.elapsed_ns = time.perf_counter_ns() - started
        size = spool.tell()
        if sink is not None:
            return Result(io.BytesIO(), size, stats)
        spool.seek(0)
        return Result(spool, size, stats)

    def column_types(self, sql: str, params: Mapping[str, str] | None = None) -> list[str]:
        """The type names of a ``SELECT``'s result columns, as the engine names them."""
        try:
            result = self._conn.query(f"DESCRIBE ({sql})", "JSONCompactEachRow",
                                      params=dict(params or {}) or None)
        except Exception as exc:
            raise EngineError.from_engine(exc) from None
        return [json.loads(line)[1] for line in result.bytes().decode().splitlines() if line]

    def _stream_into(self, spool: IO[bytes] | Sink, sql: str, fmt: str, params: dict[str, str],
                     stats: Stats, shape: Callable[[bytes], bytes] | None) -> None:
        arrow = _ArrowJoiner(spool, fmt) if fmt in _ARROW else None  # type: ignore[arg-type]
        try:
            stream = self._conn.send_query(sql, "ArrowStream" if arrow else fmt,
                                           params=params or None)
        except Exception as exc:
            raise EngineError.from_engine(exc) from None
        try:
            while (chunk := stream.fetch()) is not None:
                data = chunk.bytes()
                if arrow is not None:
                    arrow.add(data)
                else:
                    spool.write(shape(data) if shape else data)
                stats.result_rows += chunk.rows_read()
                stats.read_rows += chunk.storage_rows_read()
                stats.read_bytes += chunk.storage_bytes_read()
            if arrow is not None:
                arrow.close()
        except BaseException as exc:
            # Left alone, the statement would run on in the engine after the request ended.
            try:
                stream.cancel()
            except Exception as cancel_error:
                log.debug("cancelling the query: %s", cancel_error)
            if isinstance(exc, EngineError) or not isinstance(exc, Exception):
                raise
            raise EngineError.from_engine(exc) from None
        stats.result_bytes = spool.tell()

    def insert(self, statement: str, fmt: str, data: Readable,
               settings: Mapping[str, str] | None = None, database: str | None = None) -> Stats:
        """Stream ``data`` (in input format ``fmt``) into ``statement`` (``INSERT INTO t …``).

        The engine takes the rows at the end: when reading ``data`` fails (its error is raised
        as it is) or the engine refuses it, the insert is cancelled and nothing is committed.
        """
        stats = Stats()
        started = time.perf_counter_ns()
        with self.applied(settings or {}, database):
            try:
                inserter = self._conn.send_insert(statement, fmt)
            except Exception as exc:
                raise EngineError.from_engine(exc) from None
            try:
                while chunk := data.read(INSERT_CHUNK):
                    try:
                        inserter.append(chunk)
                    except Exception as exc:
                        raise EngineError.from_engine(exc) from None
                try:
                    result = inserter.finish()
                except Exception as exc:
                    raise EngineError.from_engine(exc) from None
            except BaseException:
                try:
                    inserter.cancel()
                except Exception as cancel_error:
                    log.debug("cancelling the insert: %s", cancel_error)
                raise
        stats.written_rows = result.rows_written
        stats.written_bytes = result.bytes_written
        stats.elapsed_ns = time.perf_counter_ns() - started
        return stats


class Engine:
    """The chdb engine of one data folder, handing out connections to it."""

    def __init__(self, path: str, forced: Mapping[str, str] | None = None) -> None:
        self._path = path
        self._forced = dict(forced or {})
        """Settings every connection starts with (the endpoint's locked ones)."""
        self._root = chdb.connect(path)  # keeps the engine open between requests
        self._root_lock = threading.Lock()
        self.version = self._scalar("SELECT version()")
        self.timezone = self._scalar("SELECT timezone()")
        self.revision = int(self._scalar("SELECT revision()"))
        self.display_name = self._scalar("SELECT displayName()")
        """What ``displayName()`` answers, sent as ``X-ClickHouse-Server-Display-Name``."""

    def _scalar(self, sql: str) -> str:
        with self._root_lock:
            return str(self._root.query(sql, "TabSeparated").bytes().decode().strip())

    def table_names(self) -> list[str]:
        """Every table function, table engine and database engine the engine knows."""
        return self._scalar(
            "SELECT arrayStringConcat(groupArray(name), ' ') FROM (SELECT name FROM "
            "system.table_functions UNION ALL SELECT name FROM system.table_engines "
            "UNION ALL SELECT name FROM system.database_engines)").split()

    def analyse(self, sql: str, params: Mapping[str, str] | None = None) -> tuple[str, str]:
        """The engine's own reading of ``sql``, never executed: its canonical text (one
        statement; several are a syntax error, as on a server) and its ``EXPLAIN AST``."""
        with self._root_lock:
            try:
                canonical = self._root.query(
                    f"SELECT formatQuerySingleLine({_quote(sql)})", "TSVRaw").bytes()
                text = canonical.decode().strip()
                ast = self._root.query(f"EXPLAIN AST {text}", "TSVRaw",
                                       params=dict(params or {}) or None).bytes().decode()
            except Exception as exc:
                error = EngineError.from_engine(exc)
                error.message = error.message.replace(
                    f" In scope SELECT formatQuerySingleLine({_quote(sql)}).", "")
                raise error from None
        return text, ast

    def connect(self, readonly: int = 0,
                prepare: Callable[[Connection], None] | None = None) -> Connection:
        """A new connection of its own (a fresh session: default settings and database, the
        forced settings, and ``readonly`` when not 0, which the engine enforces); ``prepare``
        runs on it before ``readonly`` applies."""
        try:
            conn = Connection(chdb.connect(self._path))
        except Exception as exc:
            raise EngineError.from_engine(exc) from None
        try:
            conn.start(self._forced)
            if prepare is not None:
                prepare(conn)
            if readonly:
                conn.start({"readonly": str(readonly)})
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def connection(self, session: Connection | None = None, readonly: int = 0,
                   prepare: Callable[[Connection], None] | None = None
                   ) -> Iterator[Connection]:
        """``session`` when given, else a connection for this statement alone; ``prepare``
        runs on it first."""
        if session is not None:
            if prepare is not None:
                prepare(session)
            yield session
            return
        conn = self.connect(readonly, prepare)
        try:
            yield conn
        finally:
            conn.close()

    def close(self) -> None:
        """Close the engine's own connection (the engine shuts down with the last one)."""
        with self._root_lock:
            self._root.close()

    def execute(self, sql: str, fmt: str, params: Mapping[str, str] | None = None,
                settings: Mapping[str, str] | None = None, database: str | None = None,
                session: Connection | None = None,
                shape: Callable[[bytes], bytes] | None = None, readonly: int = 0,
                describe: Callable[[list[str]], None] | None = None,
                prepare: Callable[[Connection], None] | None = None,
                sink: Sink | None = None, stats: Stats | None = None) -> Result:
        """Run one statement on ``session`` or a connection of its own (``Connection.execute``),
        ``prepare`` run on the connection first."""
        with self.connection(session, readonly, prepare) as conn:
            return conn.execute(sql, fmt, params, settings, database, shape, describe, sink,
                                stats)

    def insert(self, statement: str, fmt: str, data: Readable,
               settings: Mapping[str, str] | None = None, database: str | None = None,
               session: Connection | None = None, readonly: int = 0) -> Stats:
        """Stream ``data`` into ``statement`` (``Connection.insert``)."""
        with self.connection(session, readonly) as conn:
            return conn.insert(statement, fmt, data, settings, database)

    def check_settings(self, settings: Mapping[str, str], readonly: int = 0) -> None:
        """Raise ClickHouse's error when a setting is unknown or its value invalid."""
        with self.connection(None, readonly) as conn, conn.applied(settings, None):
            pass
