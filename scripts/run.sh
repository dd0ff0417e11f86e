#!/usr/bin/env bash
# Runs Weft on this host: builds the release binaries and execs `weft up`, which supervises the
# gateway, ipam-svc, the driver-agent (managing this host's network namespace: run as root) and
# dns-svc, every service on its default port, state in SQLite files under ./weft-data.
# Every argument goes to `weft up` (--data-dir DIR, --host-name NAME, --netns NAME, ...; see
# `weft up --help`). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
esac
bash scripts/setup.sh --run
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/weft/target}
. scripts/safe-dir.sh
safe_exec_dir "$CARGO_TARGET_DIR"
cargo build --release --locked --bins
exec "$CARGO_TARGET_DIR/release/weft" up "$@"
