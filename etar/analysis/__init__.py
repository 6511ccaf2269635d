"""04 · Analyze: the minute's aggregation in pure PySpark (``aggregation``), the Spark job
(``job``, what ``spark/spark.py`` runs), its submit spec (``submit``) and the client of the warm
Spark Connect server (``remote``)."""
