#!/usr/bin/env bash
# Stops a Postgres started by pg-up.sh and removes its files.
set -u
PGROOT=${1:-}
[ -n "$PGROOT" ] || exit 0
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
[ -d "$PGROOT/data" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGROOT/data" -m fast -w stop >/dev/null 2>&1
case "$PGROOT" in /tmp/weft-pg.*) rm -rf "$PGROOT" ;; esac
