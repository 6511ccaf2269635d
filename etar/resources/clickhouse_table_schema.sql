-- user_interactions: one row per event from user_event_schema.avsc.
-- Applied idempotently by `etar stack up` (native stack) and by the ClickHouse init of the
-- compose stack. All times are UTC.
--
-- * PARTITION BY event_minute: the minute extract reads exactly one partition.
-- * ReplacingMergeTree keyed on event_id (inside ORDER BY): a batch the sink replays after a
--   crash collapses into the rows already there; readers that need exact counts use FINAL
--   (cheap here: one partition, do_not_merge_across_partitions_select_final).
-- * non_replicated_deduplication_window: the sink inserts each run of offsets as one block
--   with a deduplication token, so a replayed block is dropped at insert (no duplicate even
--   before a merge); the window is how many recent blocks ClickHouse remembers.
-- * ORDER BY (event_type, status, event_id): per-type/status aggregation reads in key order.
-- * TTL drops whole minute partitions after the retention (ETAR_CLICKHOUSE_RETENTION_HOURS,
--   24 h by default), so the partition count stays bounded.
CREATE TABLE IF NOT EXISTS user_interactions
(
    event_id      UUID,
    user_id       UUID,
    session_id    UUID,
    event_type    Enum8('PAGE_VIEW' = 1, 'SEARCH' = 2, 'PRODUCT_VIEW' = 3, 'ADD_TO_CART' = 4,
                        'REMOVE_FROM_CART' = 5, 'CHECKOUT' = 6, 'PURCHASE' = 7),
    status        Enum8('SUCCESS' = 1, 'ERROR' = 2),
    error_code    LowCardinality(Nullable(String)),
    error_message Nullable(String),
    product_id    Nullable(String),
    price         Nullable(Float64),
    quantity      Nullable(Int32),
    currency      LowCardinality(Nullable(String)),
    search_query  Nullable(String),
    device        Enum8('DESKTOP' = 1, 'MOBILE' = 2, 'TABLET' = 3),
    country       LowCardinality(String),
    page_url      String,
    referrer      Nullable(String),
    event_ts      DateTime64(3, 'UTC'),
    event_minute  DateTime('UTC') MATERIALIZED toStartOfMinute(event_ts),
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY event_minute
ORDER BY (event_type, status, event_id)
TTL event_minute + toIntervalHour(24) DELETE
SETTINGS ttl_only_drop_parts = 1, merge_with_ttl_timeout = 600,
         non_replicated_deduplication_window = 10000;
