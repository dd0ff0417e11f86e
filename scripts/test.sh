#!/usr/bin/env bash
# Runs every check and test of the workspace, as CI does: formatting, clippy, then the whole
# test suite (unit, integration, real grpcurl, real Postgres). Installs what it needs first.
# Run as root (the Postgres helper uses runuser; kernel tests need namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/weft-target}
export PATH="${WEFT_VENV:-/var/tmp/weft-venv}/bin:$PATH"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

PGPORT=${PGPORT:-$((56000 + RANDOM % 4000))}
export PGPORT
pg_root_file=$(mktemp)
WEFT_TEST_DATABASE_URL=$(bash scripts/pg-up.sh 2>"$pg_root_file")
export WEFT_TEST_DATABASE_URL
pg_root=$(head -n1 "$pg_root_file"); rm -f "$pg_root_file"
trap 'bash scripts/pg-down.sh "$pg_root"' EXIT

cargo nextest run --workspace --locked --no-fail-fast "$@"
