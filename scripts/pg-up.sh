#!/usr/bin/env bash
# Starts a throwaway PostgreSQL 15 on 127.0.0.1 and prints its URL. Postgres refuses to run as
# root, so the server runs as the `postgres` user. Usage: pg-up.sh ROOT_FILE: the cluster's
# directory is written to ROOT_FILE (before anything can fail), for scripts/pg-down.sh.
set -euo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGPORT=${PGPORT:-55432}
ROOT_FILE=${1:?usage: pg-up.sh ROOT_FILE}
PGROOT=$(mktemp -d /tmp/weft-pg.XXXXXX)
echo "$PGROOT" >"$ROOT_FILE"
chown postgres:postgres "$PGROOT"
as_pg() { runuser -u postgres -- "$@"; }
as_pg "$PGBIN/initdb" -D "$PGROOT/data" -U postgres -A trust -E UTF8 --no-locale --no-sync >"$PGROOT/initdb.log" 2>&1
# fsync=off: the tests that kill processes kill ipam-svc, never Postgres itself.
as_pg "$PGBIN/pg_ctl" -D "$PGROOT/data" -l "$PGROOT/server.log" -w -t 30 \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGROOT -c fsync=off -c max_connections=300" start >/dev/null
as_pg "$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres weft_test
echo "postgres://postgres@127.0.0.1:$PGPORT/weft_test"
