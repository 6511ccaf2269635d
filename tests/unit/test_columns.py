"""One column list: the Avro schema is the source; the rest is derived or must agree."""

from __future__ import annotations

import dataclasses
import re

from etar import resources
from etar.events.event import Event, schema_fields
from etar.extract.parquet import ARROW_SCHEMA
from etar.warehouse import table as warehouse

DERIVED_BY_THE_TABLE = ("event_minute", "ingested_at")


def _table_columns() -> dict[str, str]:
    """Column → type of ``clickhouse_table_schema.sql``, in order."""
    body = resources.text(resources.TABLE_SQL).split("(", 1)[1].split("\n)\n", 1)[0]
    columns: dict[str, str] = {}
    for line in body.splitlines():
        match = re.match(r"^ {4}(\w+)\s+(.+)$", line)
        if match:
            columns[match.group(1)] = match.group(2)
        elif line.strip() and columns:  # a type continued on the next line
            last = next(reversed(columns))
            columns[last] += " " + line.strip()
    return columns


def test_the_warehouse_and_extract_columns_are_the_schema_fields() -> None:
    names = tuple(field["name"] for field in schema_fields())
    assert warehouse.COLUMNS == names == tuple(ARROW_SCHEMA.names)


def test_the_event_model_has_exactly_the_schema_fields() -> None:
    assert {f.name for f in dataclasses.fields(Event)} == set(warehouse.COLUMNS)


def test_the_table_has_the_schema_fields_in_order_plus_derived_ones() -> None:
    table = _table_columns()
    assert tuple(table) == (*warehouse.COLUMNS, *DERIVED_BY_THE_TABLE)
    for field in schema_fields():
        nullable = isinstance(field["type"], list)
        assert ("Nullable(" in table[field["name"]]) == nullable, field["name"]
        assert ARROW_SCHEMA.field(field["name"]).nullable == nullable


def test_enum_symbols_agree_between_schema_and_table() -> None:
    table = _table_columns()
    for field in schema_fields():
        if isinstance(field["type"], dict) and field["type"]["type"] == "enum":
            symbols = re.findall(r"'(\w+)' = \d+", table[field["name"]])
            assert symbols == field["type"]["symbols"], field["name"]
