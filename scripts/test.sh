#!/usr/bin/env bash
# Runs every check and test of the workspace, as CI does: formatting, clippy, then the whole
# test suite (unit, integration, real grpcurl, real Postgres). Installs what it needs first.
# Run as root (the Postgres helper uses runuser; kernel tests need namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/weft/target}
export PATH="${WEFT_VENV:-/var/cache/weft/venv}/bin:$PATH"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

PGPORT=${PGPORT:-$((56000 + RANDOM % 4000))}
export PGPORT
pg_root_file=$(mktemp)
# The stop hook is in place before the server starts, and reads the cluster's directory from
# the file pg-up.sh writes first, so a server never outlives this script.
trap 'bash scripts/pg-down.sh "$(cat "$pg_root_file")"; rm -f "$pg_root_file"' EXIT
WEFT_TEST_DATABASE_URL=$(bash scripts/pg-up.sh "$pg_root_file")
export WEFT_TEST_DATABASE_URL

cargo nextest run --workspace --locked --no-fail-fast "$@"
