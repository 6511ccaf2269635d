"""ClickHouse for the native stack: the chdb engine served on ClickHouse's HTTP interface.

Run as ``python -m etar_stack.clickhouse_http``; its service definition is
``etar_stack.services.clickhouse``.
"""
