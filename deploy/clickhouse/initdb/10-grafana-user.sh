#!/bin/bash
# Run once by the clickhouse-server image on a fresh data volume (/docker-entrypoint-initdb.d):
# the read-only user Grafana's datasource connects as. readonly = 2 forbids every write and DDL
# but lets the plugin set per-query settings such as max_execution_time (readonly = 1 would
# refuse them); SELECT is granted on the rapport database only (its future tables included).
set -euo pipefail
clickhouse client --user "${CLICKHOUSE_USER:-default}" --password "${CLICKHOUSE_PASSWORD:-}" \
  --multiquery <<SQL
CREATE DATABASE IF NOT EXISTS rapport;
CREATE USER IF NOT EXISTS grafana IDENTIFIED WITH sha256_password BY '${GRAFANA_CLICKHOUSE_PASSWORD:-grafana}'
  SETTINGS readonly = 2;
GRANT SELECT ON rapport.* TO grafana;
SQL
