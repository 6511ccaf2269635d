"""External data: a form's file parts as temporary tables for the one query they came with.

As ClickHouse's HTTP interface: a file part named ``<name>`` is table ``<name>``, its columns
from ``<name>_structure`` (``id UInt32, s String``) or ``<name>_types`` (``UInt32,String``,
columns ``_1``, ``_2``…), its data in ``<name>_format`` (TabSeparated by default). The
structure is read by the engine itself and may only name columns and types (no defaults, no
expressions), its statements pass the same guard as any other, and its data goes in as data.
The tables are created on the query's connection before ``readonly`` applies (a server creates
them for a read-only user too), and dropped after it on a session's connection.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO

from etar_stack.clickhouse_http import guard
from etar_stack.clickhouse_http.engine import Connection, EngineError
from etar_stack.clickhouse_http.form import Form
from etar_stack.clickhouse_http.native import _split

SUFFIXES = ("_structure", "_types", "_format")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FORMAT = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_ALLOWED = frozenset({"Identifier", "Columns", "ExpressionList", "ColumnDeclaration", "DataType",
                      "TupleDataType", "Literal", "Storage"})
"""``EXPLAIN AST`` nodes a structure may contain (``Function Memory`` is the engine's own); a
column's declaration has one child, its type (a default, a codec, a TTL would be more)."""


def _bad(text: str) -> EngineError:
    return EngineError(36, f"Code: 36. DB::Exception: {text}. (BAD_ARGUMENTS)")


@dataclass
class Table:
    """One external table: its name, columns, input format and data."""

    name: str
    structure: str
    fmt: str
    data: IO[bytes]

    def create(self) -> str:
        return f"CREATE TEMPORARY TABLE `{self.name}` ({self.structure}) ENGINE = Memory"

    def insert(self) -> str:
        return f"INSERT INTO `{self.name}` FORMAT {self.fmt}"


def tables(form: Form, params: Mapping[str, str]) -> list[Table]:
    """The form's external tables, described by ``params`` (the URL's and the form's)."""
    found = []
    for name, data in form.files.items():
        if not _NAME.fullmatch(name):
            raise _bad(f"External table name {name!r} is not an identifier")
        structure, types = params.get(f"{name}_structure"), params.get(f"{name}_types")
        if structure and types:
            raise _bad(f"External table {name}: give {name}_structure or {name}_types, not both")
        if types:
            structure = ", ".join(f"_{i} {kind}" for i, kind in enumerate(_split(types), 1))
        if not structure:
            raise _bad(f"Neither structure nor types have not been provided for external "
                       f"table {name}. Use fields {name}_structure or {name}_types to do so")
        fmt = params.get(f"{name}_format") or "TabSeparated"
        if not _FORMAT.fullmatch(fmt):
            raise _bad(f"External table {name}: bad format {fmt!r}")
        found.append(Table(name, structure, fmt, data))
    return found


def parameters(names: Mapping[str, str], form: Form) -> set[str]:
    """The parameters among ``names`` that describe the form's external tables."""
    return {name + suffix for name in form.files for suffix in SUFFIXES} & set(names)


def check(table: Table, analysed: Callable[[str], tuple[str, str]]) -> None:
    """Refuse a structure that is more than columns and types; ``analysed`` is the engine's
    reading of a statement with the guard's rules applied."""
    canonical, ast = analysed(table.create())
    lines = ast.splitlines()
    for line in lines[1:]:
        kind = line.strip().split(" ", 1)[0]
        declared = kind == "ColumnDeclaration" and not line.endswith("(children 1)")
        if declared or (kind not in _ALLOWED and line.strip() != "Function Memory"):
            raise _bad(f"External table {table.name}: its structure may only name columns "
                       f"and their types ({kind} found)")
    if not canonical.endswith(") ENGINE = Memory") or sum(
            "Storage definition" in line for line in lines) != 1:
        raise _bad(f"External table {table.name}: its structure may only name columns")
    analysed(table.insert())


def prepare(found: list[Table]) -> Callable[[Connection], None]:
    """Create and fill the tables on a connection (before the query runs)."""
    def run(conn: Connection) -> None:
        for table in found:
            conn.command(table.create())
            conn.insert(f"INSERT INTO `{table.name}`", table.fmt, table.data,
                        guard.FORCED_SETTINGS)
    return run


def drop(conn: Connection, found: list[Table]) -> None:
    """Drop the tables from a session's connection (after the query)."""
    for table in found:
        conn.command(f"DROP TEMPORARY TABLE IF EXISTS `{table.name}`", quiet=True)
