"""05 · Report: the minute report model, read from the bucket, posted and fetched
(``minute_report``), and what the dashboard and notebooks draw from it (``view``, ``charts``)."""
