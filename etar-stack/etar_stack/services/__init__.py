"""One module per native service: its command, environment, readiness probe and ports."""
