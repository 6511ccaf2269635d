"""The event every stage shares: its model, Avro schema and generator (``event``), and its Kafka
serialization (``serde``: the UUID key, the Confluent-framed Avro value)."""
