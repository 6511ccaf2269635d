# syntax=docker/dockerfile:1.7
# connect-helper: renders the connector template with envsubst and registers it.
FROM alpine:3.20
RUN apk add --no-cache curl gettext jq \
    && adduser -D -u 10001 helper
COPY connect/clickhouse_connector_configuration.json connect/register_connector.sh /connect/
USER helper
ENTRYPOINT ["/bin/sh", "/connect/register_connector.sh"]
