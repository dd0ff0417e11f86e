#!/usr/bin/env bash
# IPAM allocation benchmark on SQLite and on a throwaway Postgres (release build).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/weft/target}
export PGPORT=${PGPORT:-$((56000 + RANDOM % 4000))}
root_file=$(mktemp)
trap 'bash scripts/pg-down.sh "$(cat "$root_file")"; rm -f "$root_file"' EXIT
url=$(bash scripts/pg-up.sh "$root_file")
WEFT_TEST_DATABASE_URL=$url WEFT_BENCH_DATABASE_URL=$url cargo bench -p ipam-svc --bench alloc
