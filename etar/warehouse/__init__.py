"""02 · Warehouse: the ClickHouse client, table, partitions and the minute read (``table``), and the
replicated DDL for a ClickHouse cluster (``cluster``)."""
