"""01 · Produce: the multi-process producer that streams generated events to Kafka
(``producer``)."""
