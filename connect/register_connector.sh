#!/bin/sh
# Waits for Kafka Connect, renders clickhouse_connector_configuration.json with envsubst and
# creates or updates the connector (PUT …/config is idempotent). Exits non-zero on failure.
set -eu
CONNECT_URL="${CONNECT_URL:-http://connect:8083}"
NAME="${CONNECTOR_NAME:-clickhouse-sink}"
TEMPLATE="${TEMPLATE:-/connect/clickhouse_connector_configuration.json}"

echo "waiting for Kafka Connect at ${CONNECT_URL}"
tries=0
until curl -fsS "${CONNECT_URL}/connectors" >/dev/null 2>&1; do
  tries=$((tries + 1))
  [ "${tries}" -lt 120 ] || { echo "Kafka Connect did not answer in 10 minutes" >&2; exit 1; }
  sleep 5
done

config="$(envsubst < "${TEMPLATE}")"
echo "${config}" | jq -e . >/dev/null || { echo "rendered configuration is not valid JSON" >&2; exit 1; }
if echo "${config}" | grep -q '\${'; then
  echo "unresolved variables in the rendered configuration" >&2; exit 1
fi

echo "creating or updating connector ${NAME}"
curl -fsS -X PUT -H "Content-Type: application/json" --data "${config}" \
  "${CONNECT_URL}/connectors/${NAME}/config" | jq '{name, tasks: (.tasks | length)}'
curl -fsS "${CONNECT_URL}/connectors/${NAME}/status" | jq '.connector.state'
