#!/usr/bin/env bash
# Starts a throwaway PostgreSQL 15 on 127.0.0.1 and prints its URL. Postgres refuses to run as
# root, so the server runs as the `postgres` user. Stop it with scripts/pg-down.sh ROOT, where
# ROOT is the first line this prints on stderr.
set -euo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGPORT=${PGPORT:-55432}
PGROOT=$(mktemp -d /tmp/weft-pg.XXXXXX)
chown postgres:postgres "$PGROOT"
as_pg() { runuser -u postgres -- "$@"; }
as_pg "$PGBIN/initdb" -D "$PGROOT/data" -U postgres -A trust -E UTF8 --no-locale --no-sync >"$PGROOT/initdb.log"
# fsync=off: the tests that kill processes kill ipam-svc, never Postgres itself.
as_pg "$PGBIN/pg_ctl" -D "$PGROOT/data" -l "$PGROOT/server.log" -w -t 30 \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGROOT -c fsync=off -c max_connections=300" start >/dev/null
as_pg "$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres weft_test
echo "$PGROOT" >&2
echo "postgres://postgres@127.0.0.1:$PGPORT/weft_test"
