"""The one owner of the chdb data folder: runs statements for every HTTP client.

chdb keeps one connection per process, and that connection runs one statement at a time (a
streaming read is broken by any other statement), so every statement takes ``_lock``. Results
are spooled (memory up to ``SPOOL_BYTES``, then a temporary file) while the lock is held and
streamed to the client after it is released, so a slow reader never stalls the sink's inserts.
Per-request settings and the database are applied with ``SET`` / ``USE`` and undone after.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Protocol

import chdb
import pyarrow as pa

log = logging.getLogger(__name__)

SPOOL_BYTES = 32 * 1024 * 1024
_STREAMED = ("SELECT", "WITH", "(")
"""Statements chdb can stream; the rest (SHOW, DESCRIBE, DDL…) run in one piece."""
_CONCATENABLE = frozenset({
    "Native", "RowBinary", "TabSeparated", "TSV", "TabSeparatedRaw", "TSVRaw", "CSV",
    "JSONEachRow", "JSONCompactEachRow", "JSONStringsEachRow", "JSONCompactStringsEachRow",
    "JSONLines", "NDJSON", "Values", "LineAsString", "RawBLOB"})
"""Formats without header or footer: chdb's per-block chunks simply concatenate."""
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


class Readable(Protocol):
    """Anything with ``read(size)``: a file, a spooled body, a prefixed stream."""

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


class Engine:
    """chdb behind a lock, with ClickHouse-like statement execution."""

    def __init__(self, path: str) -> None:
        self._conn = chdb.connect(path)
        self._lock = threading.Lock()
        self.version = self._scalar("SELECT version()")
        self.timezone = self._scalar("SELECT timezone()")

    def _scalar(self, sql: str) -> str:
        with self._lock:
            return str(self._conn.query(sql, "TabSeparated").bytes().decode().strip())

    def close(self) -> None:
        """Close the connection (parts already written stay intact)."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def _context(self, settings: Mapping[str, str], database: str | None) -> Iterator[None]:
        """Hold the lock with ``settings`` and ``database`` applied, undoing both after."""
        with self._lock:
            applied: list[str] = []
            try:
                for name, value in settings.items():
                    self._run(f"SET {_identifier(name)} = {_quote(str(value))}")
                    applied.append(name)
                if database and database != "default":
                    self._run(f"USE {_identifier(database)}")
                yield
            finally:
                for name in applied:
                    self._run_quietly(f"SET {_identifier(name)} = DEFAULT")
                if database and database != "default":
                    self._run_quietly("USE default")

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
                settings: Mapping[str, str] | None = None, database: str | None = None
                ) -> Result:
        """Run one statement; its output (in ``fmt`` unless it names a FORMAT) is spooled."""
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        stats = Stats()
        started = time.perf_counter_ns()
        try:
            with self._context(settings or {}, database):
                streamable = fmt in _CONCATENABLE or fmt in _ARROW
                if first_keyword(sql) in _STREAMED and streamable:
                    self._stream_into(spool, sql, fmt, dict(params or {}), stats)
                else:
                    try:
                        result = self._conn.query(sql, fmt, params=dict(params or {}) or None)
                    except Exception as exc:
                        raise EngineError.from_engine(exc) from None
                    data = result.bytes()
                    spool.write(data)
                    stats.written_rows = result.rows_written()
                    stats.written_bytes = result.bytes_written()
                    stats.read_rows = result.storage_rows_read()
                    stats.read_bytes = result.storage_bytes_read()
                    stats.result_bytes = len(data)
        except BaseException:
            spool.close()
            raise
        stats.elapsed_ns = time.perf_counter_ns() - started
        size = spool.tell()
        spool.seek(0)
        return Result(spool, size, stats)  # type: ignore[arg-type]

    def _stream_into(self, spool: IO[bytes], sql: str, fmt: str, params: dict[str, str],
                     stats: Stats) -> None:
        arrow = _ArrowJoiner(spool, fmt) if fmt in _ARROW else None
        try:
            stream = self._conn.send_query(sql, "ArrowStream" if arrow else fmt,
                                           params=params or None)
            while (chunk := stream.fetch()) is not None:
                data = chunk.bytes()
                if arrow is not None:
                    arrow.add(data)
                else:
                    spool.write(data)
                stats.result_rows += chunk.rows_read()
                stats.read_rows += chunk.storage_rows_read()
                stats.read_bytes += chunk.storage_bytes_read()
            if arrow is not None:
                arrow.close()
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError.from_engine(exc) from None
        stats.result_bytes = spool.tell()

    def insert(self, statement: str, fmt: str, data: Readable,
               settings: Mapping[str, str] | None = None, database: str | None = None) -> Stats:
        """Stream ``data`` (in input format ``fmt``) into ``statement`` (``INSERT INTO t …``)."""
        stats = Stats()
        started = time.perf_counter_ns()
        with self._context(settings or {}, database):
            try:
                inserter = self._conn.send_insert(statement, fmt)
            except Exception as exc:
                raise EngineError.from_engine(exc) from None
            try:
                while chunk := data.read(1024 * 1024):
                    inserter.append(chunk)
                result = inserter.finish()
            except Exception as exc:
                try:
                    inserter.cancel()
                except Exception as cancel_error:
                    log.debug("cancelling the insert: %s", cancel_error)
                raise EngineError.from_engine(exc) from None
        stats.written_rows = result.rows_written
        stats.written_bytes = result.bytes_written
        stats.elapsed_ns = time.perf_counter_ns() - started
        return stats

    def check_settings(self, settings: Mapping[str, str]) -> None:
        """Raise ClickHouse's error when a setting is unknown or its value invalid."""
        with self._context(settings, None):
            pass
