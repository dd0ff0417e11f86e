#!/usr/bin/env bash
# Runs Weft on this host: every service on its default port (see README), state in SQLite
# files under ./weft-data (or --data-dir DIR). Ctrl-C stops them all.
#
# Until `weft up` (one launcher) lands, this supervises the four service binaries: the gateway
# (networks, sandboxes, events), ipam-svc, the driver-agent (managing this host's own network
# namespace: run it as root) and dns-svc.
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir=./weft-data
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) data_dir=$2; shift 2 ;;
    --data-dir=*) data_dir=${1#*=}; shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 64 ;;
  esac
done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/weft-target}
cargo build --release --locked --bins
bin=$CARGO_TARGET_DIR/release
mkdir -p "$data_dir"

pids=()
stop() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait
}
trap stop INT TERM EXIT

"$bin/ipam-svc" --database-url "sqlite://$data_dir/ipam.db" & pids+=($!)
"$bin/gateway" --database-url "sqlite://$data_dir/gateway.db" & pids+=($!)
"$bin/driver-agent" --data-dir "$data_dir/agent" & pids+=($!)
"$bin/dns-svc" --host local & pids+=($!)

cat <<MSG
Weft is running (Ctrl-C stops it):
  gateway       127.0.0.1:7700   grpcurl -plaintext 127.0.0.1:7700 list
  ipam-svc      127.0.0.1:7701   grpcurl -plaintext 127.0.0.1:7701 describe weft.ipam.v1.IpamService
  driver-agent  127.0.0.1:7702
  dns-svc       127.0.0.1:7703
  data          $data_dir
MSG
wait -n
echo "run.sh: a service exited; stopping the others" >&2
exit 1
