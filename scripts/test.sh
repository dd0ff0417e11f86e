#!/usr/bin/env bash
# Runs every check and test of the workspace, as CI does: formatting, clippy, then the whole
# test suite (unit, integration, real grpcurl, real Postgres). Installs what it needs first.
# Run as root (the Postgres helper uses runuser; kernel tests need namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/weft/target}
# A run from a fresh clone compiles every workspace crate anew: without incremental caches that is
# about a fifth faster (83 s against 103 s for the test build here). Dependencies never use them.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# One test thread more than cores: the paced test group (.config/nextest.toml) mostly waits.
export NEXTEST_TEST_THREADS=${NEXTEST_TEST_THREADS:-$(($(nproc) + 1))}
export PATH="${WEFT_VENV:-/var/cache/weft/venv}/bin:$PATH"

# A stable port (the first free one from 15432): the build scripts watch the database URL
# (weft-testcfg), so a port that changed every run would rebuild the crates that have them.
# Below the kernel's ephemeral range (32768-60999), where a test's client connection could
# hold it as its source port, and the tests' own service ports (testkit: 20000-31999).
if [ -z "${PGPORT:-}" ]; then
  PGPORT=15432
  # Any socket on the port (also one in TIME-WAIT from a run just before) can make the
  # server's bind fail: the next port then.
  while ss -Htan "sport = :$PGPORT" | grep -q .; do PGPORT=$((PGPORT + 1)); done
fi
export PGPORT
pg_root_file=$(mktemp)
# The stop hook is in place before the server starts, and reads the cluster's directory from
# the file pg-up.sh writes first, so a server never outlives this script.
trap 'bash scripts/pg-down.sh "$(cat "$pg_root_file")"; rm -f "$pg_root_file"' EXIT
WEFT_TEST_DATABASE_URL=$(bash scripts/pg-up.sh "$pg_root_file")
export WEFT_TEST_DATABASE_URL
# Tests that need root or Postgres are ignored by a build that cannot run them (weft-testcfg);
# here nothing may be skipped: a build that would skip anything fails instead. Set before
# clippy too, so clippy and nextest see the same build-script environment and neither
# invalidates the other's build.
export WEFT_TEST_REQUIRE_ALL=1

cargo fmt --all --check
# No import circle between the modules of any crate (top level, and inside every directory module).
python3 scripts/import-cycles.py --self-test >/dev/null
python3 scripts/import-cycles.py $(ls -d */src services/*/src) >/dev/null
cargo clippy --workspace --all-targets --locked -- -D warnings

# Every service process a test starts keeps its log here (weft_testkit::logs), fresh each run;
# with the JUnit report of the `ci` profile (every test's own output), it is checked below.
log_dir="$CARGO_TARGET_DIR/test-logs"
# (nextest keeps its reports under the workspace's target/, whatever CARGO_TARGET_DIR says.)
junit=target/nextest/ci/junit.xml
rm -rf "$log_dir" "$junit"
mkdir -p "$log_dir"
export WEFT_TEST_LOG_DIR="$log_dir"
python3 scripts/secrets-in-logs.py --self-test >/dev/null

status=0
cargo nextest run --workspace --locked --no-fail-fast --profile ci "$@" || status=$?
# No token and no private key in any log or test output of the run, also when a test failed
# (the run then keeps nextest's status).
du -sh "$log_dir" "$junit" || true
# The whole suite starts services, so an empty log directory means logs were not kept (the
# checker refuses it); a run of some tests only (arguments) may start none.
scan=("$junit")
if [ $# -eq 0 ] || [ -n "$(ls -A "$log_dir")" ]; then scan+=("$log_dir"); fi
# And the test Postgres's own log (statements it refused, with their values): the stores keep
# token hashes only.
pg_log="$(cat "$pg_root_file")/server.log"
if [ -f "$pg_log" ]; then scan+=("$pg_log"); fi
# (A whole run keeps about 2 MB; 300 MB would be logs grown without bound.)
python3 scripts/secrets-in-logs.py --max-mb 300 "${scan[@]}" ||
  { code=$?; [ "$status" -ne 0 ] || status=$code; }
exit "$status"
