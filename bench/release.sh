# Sourced by the benchmark scripts that run Weft's release binaries (bench/*.sh, from the
# repository's root): builds them in CARGO_TARGET_DIR (default /var/cache/weft/target), after
# checking that no other user can write there (scripts/safe-dir.sh), and exports
# WEFT_BENCH_BINS, where the benchmarks find them.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/weft/target}
. scripts/safe-dir.sh
safe_exec_dir "$CARGO_TARGET_DIR"
cargo build --release --locked --bins
export WEFT_BENCH_BINS="$CARGO_TARGET_DIR/release"
