"""The Spark job of the seed, by its seed name: aggregate one minute's Parquet into JSON.

    spark-submit spark/spark.py s3a://<bucket>/<YYYY-MM-DD_HH-MM>.parquet

A thin entry point: the job is ``etar.analysis.job`` (shipped in the package, which is what
``etar analyze`` and the Airflow DAG submit); the aggregation is ``etar.analysis.aggregation``.
"""

import sys

from etar.analysis.job import main

if __name__ == "__main__":
    sys.exit(main(sys.argv))
