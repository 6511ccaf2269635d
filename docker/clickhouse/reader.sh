#!/bin/bash
# The read-only user the native endpoint also has (for IDEs, notebooks, dashboards):
# ETAR_CLICKHOUSE_READER_USER, `readonly` = ETAR_CLICKHOUSE_READER_READONLY, SELECT on the
# pipeline's database only. The clickhouse-server image runs this on its first start (an empty
# data volume); the table itself is made by clickhouse-init (etar's own schema step).
set -euo pipefail
quoted() { local s=${1//\\/\\\\}; printf "'%s'" "${s//\'/\\\'}"; }
user=${ETAR_CLICKHOUSE_READER_USER//\`/}
clickhouse client --host 127.0.0.1 --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" \
    --multiquery --query "
CREATE USER IF NOT EXISTS \`$user\`
    IDENTIFIED WITH sha256_password BY $(quoted "$ETAR_CLICKHOUSE_READER_PASSWORD")
    SETTINGS readonly = ${ETAR_CLICKHOUSE_READER_READONLY:-2};
GRANT SELECT ON \`$CLICKHOUSE_DB\`.* TO \`$user\`;"
