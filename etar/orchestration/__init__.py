"""Orchestration: when a minute is complete (``completeness``), reconciliation of minutes with
their reports (``reconcile``), failures as one line (``failures``), the Airflow REST API
(``airflow_api``), one minute in-process (``pipeline``) and the notebook replay (``replay``)."""
