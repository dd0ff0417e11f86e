#!/usr/bin/env bash
# dns-svc against dnsmasq, both serving the same 1,000 names on loopback only:
# dnsperf for 10 s at full load, then at a steady 2,000 qps; prints qps and latency
# (average and p99, the p99 computed from dnsperf's per-query -v lines) for each.
#
#   bench/dns.sh                  # N=1000 DURATION=10 RATE=2000 by default
#   N=5000 DURATION=20 bench/dns.sh
#
# dns-svc gets its records from a fake gateway (dns-svc/examples/bench_gateway.rs), which also
# writes the hosts file dnsmasq serves (--addn-hosts, --no-resolv: no upstream either way).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-1000}
DURATION=${DURATION:-10}
RATE=${RATE:-2000}
GW_PORT=${GW_PORT:-17790}
ADMIN_PORT=${ADMIN_PORT:-17793}
DNS_PORT=${DNS_PORT:-15390}
MASQ_PORT=${MASQ_PORT:-15391}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/weft-target-dns}

need() {
    command -v "$1" >/dev/null 2>&1 && return
    echo "installing $2" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need dnsperf dnsperf
need dnsmasq dnsmasq
need dig bind9-dnsutils

# dns-svc in release; the fake gateway only sends one snapshot, so its debug build will do (an
# example brings the dev-dependencies, which would cost a long release build).
(cd "$ROOT" && cargo build --release -q -p dns-svc --bin dns-svc &&
    cargo build -q -p dns-svc --example bench_gateway)
BIN=$CARGO_TARGET_DIR/release
GATEWAY=$CARGO_TARGET_DIR/debug/examples/bench_gateway

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$GATEWAY" "127.0.0.1:$GW_PORT" "$N" "$WORK/hosts" >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
"$BIN/dns-svc" --listen "127.0.0.1:$ADMIN_PORT" --gateway "http://127.0.0.1:$GW_PORT" \
    --host bench --operator-listen "127.0.0.1:$DNS_PORT" --upstream 127.0.0.1:9 \
    --log-filter warn >"$WORK/dns-svc.log" 2>&1 &
PIDS+=($!)
DNS_PID=$!
until [ -s "$WORK/hosts" ]; do sleep 0.1; done
dnsmasq --keep-in-foreground --no-resolv --no-hosts --addn-hosts="$WORK/hosts" \
    --listen-address=127.0.0.1 --bind-interfaces --port="$MASQ_PORT" \
    --pid-file="$WORK/dnsmasq.pid" --cache-size=10000 --user=root --log-facility=- >"$WORK/dnsmasq.log" 2>&1 &
PIDS+=($!)
MASQ_PID=$!

last=$((N - 1))
want="10.90.$((last / 250)).$((last % 250 + 1))"
for port in "$DNS_PORT" "$MASQ_PORT"; do
    for _ in $(seq 100); do
        got=$(dig +short +time=1 +tries=1 -p "$port" @127.0.0.1 "n$last.bench.weft" A 2>/dev/null || true)
        [ "$got" = "$want" ] && break
        sleep 0.2
    done
    [ "$got" = "$want" ] || { echo "port $port does not answer n$last.bench.weft ($got)" >&2; cat "$WORK"/*.log >&2; exit 1; }
done

for i in $(seq 0 "$last"); do echo "n$i.bench.weft A"; done >"$WORK/queries"

# run NAME PORT LABEL [dnsperf flags...]: one dnsperf run, one result line.
run() {
    local name=$1 port=$2 label=$3 pid
    shift 3
    [ "$name" = dns-svc ] && pid=$DNS_PID || pid=$MASQ_PID
    local t0 c0 t1 c1
    c0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries" -l "$DURATION" -v "$@" >"$WORK/out" 2>&1
    c1=$(awk '{print $14+$15}' "/proc/$pid/stat")
    local qps lost avg p99 p50 cpu
    qps=$(awk '/Queries per second:/ {print $4}' "$WORK/out")
    lost=$(awk '/Queries lost:/ {print $3, $4}' "$WORK/out")
    avg=$(awk '/Average Latency/ {print $4}' "$WORK/out")
    # Per-query lines: "> NOERROR n1.bench.weft A 0.000123" (latency in seconds, last field).
    read -r p50 p99 < <(awk '/^> / {print $NF}' "$WORK/out" | sort -g |
        awk '{v[NR]=$1} END {if (NR == 0) {print "n/a n/a"; exit}
             i50=int(NR*0.50); if (i50<1) i50=1; i99=int(NR*0.99+0.999); if (i99>NR) i99=NR;
             printf "%.3f %.3f\n", v[i50]*1000, v[i99]*1000}')
    cpu=$(awk -v a="$c0" -v b="$c1" -v d="$DURATION" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {printf "%.0f", (b-a)*100/hz/d}')
    printf '%-8s %-12s qps %10s  lost %-14s avg %8.3f ms  p50 %7s ms  p99 %7s ms  server CPU %3s %%\n' \
        "$name" "$label" "$qps" "$lost" "$(awk -v a="$avg" 'BEGIN {print a*1000}')" "$p50" "$p99" "$cpu"
}

echo "dns-svc vs dnsmasq, $N names, ${DURATION}s per run, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
run dns-svc "$DNS_PORT" "full load" -q 200 -c 4
run dnsmasq "$MASQ_PORT" "full load" -q 200 -c 4
run dns-svc "$DNS_PORT" "$RATE qps" -Q "$RATE" -c 4
run dnsmasq "$MASQ_PORT" "$RATE qps" -Q "$RATE" -c 4
