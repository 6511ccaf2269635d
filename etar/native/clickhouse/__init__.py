"""ClickHouse for the native stack: the chdb engine served on ClickHouse's HTTP interface.

Run as ``python -m etar.native.clickhouse``; its service definition is
``etar.native.services.clickhouse``.
"""
