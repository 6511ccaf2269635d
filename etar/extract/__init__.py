"""03 · Extract: one minute of ClickHouse → Parquet in the bucket (``parquet``), and the S3 object
helpers every later stage uses (``storage``)."""
