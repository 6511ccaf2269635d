"""The sink: the Kafka → ClickHouse consumer (``consumer``), its pure batching, cutting and
poison logic (``batch``) and the dead-letter topic (``dead_letters``)."""
