#!/usr/bin/env bash
# dns-svc against dnsmasq, both serving the same 1,000 names on loopback only:
# dnsperf for 10 s at full load, then at a steady 2,000 qps, the two servers alternating for
# ROUNDS rounds; prints every run (qps, latency average, p50 and p99 from dnsperf's per-query -v
# lines, the server's CPU and CPU time per query), then the medians.
#
#   bench/dns.sh                  # N=1000 DURATION=10 RATE=2000 ROUNDS=5 by default
#   N=5000 DURATION=20 bench/dns.sh
#
# dns-svc gets its records from a fake gateway (dns-svc/examples/bench_gateway.rs), which also
# writes the hosts file dnsmasq serves (--addn-hosts, --no-resolv: no upstream either way).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-1000}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-5}
RATE=${RATE:-2000}
GW_PORT=${GW_PORT:-17790}
ADMIN_PORT=${ADMIN_PORT:-17793}
DNS_PORT=${DNS_PORT:-15390}
MASQ_PORT=${MASQ_PORT:-15391}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/weft/target-dns}

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
. "$ROOT/scripts/safe-dir.sh"
safe_exec_dir "$CARGO_TARGET_DIR"
BIN=$CARGO_TARGET_DIR/release
GATEWAY=$CARGO_TARGET_DIR/debug/examples/bench_gateway

# dnsperf -v writes a line per query: keep that in memory, not on a disk whose write-back would
# stall the runs that follow.
WORK=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
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

# run NAME PORT LABEL [dnsperf flags...]: one dnsperf run, one result line; with -v among the
# flags the latency percentiles come from dnsperf's per-query lines (-v costs dnsperf much CPU,
# so the full-load capacity runs go without it).
run() {
    local name=$1 port=$2 label=$3 pid
    shift 3
    [ "$name" = dns-svc ] && pid=$DNS_PID || pid=$MASQ_PID
    local c0 c1
    c0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries" -l "$DURATION" "$@" >"$WORK/out" 2>&1
    c1=$(awk '{print $14+$15}' "/proc/$pid/stat")
    local qps lost avg p99 p50 cpu us
    qps=$(awk '/Queries per second:/ {print $4}' "$WORK/out")
    lost=$(awk '/Queries lost:/ {print $3, $4}' "$WORK/out")
    avg=$(awk '/Average Latency/ {print $4}' "$WORK/out")
    # Per-query lines: "> NOERROR n1.bench.weft A 0.000123" (latency in seconds, last field).
    read -r p50 p99 < <(awk '/^> / {print $NF}' "$WORK/out" | sort -g |
        awk '{v[NR]=$1} END {if (NR == 0) {print "- -"; exit}
             i50=int(NR*0.50); if (i50<1) i50=1; i99=int(NR*0.99+0.999); if (i99>NR) i99=NR;
             printf "%.3f %.3f\n", v[i50]*1000, v[i99]*1000}')
    read -r cpu us < <(awk -v a="$c0" -v b="$c1" -v d="$DURATION" -v q="$qps" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {printf "%.0f %.2f\n", (b-a)*100/hz/d, (b-a)/hz*1e6/(q*d)}')
    printf '%-8s %-12s qps %10.0f  lost %-12s avg %7.3f ms  p50 %6s ms  p99 %6s ms  CPU %3s %%  %5s us/query\n' \
        "$name" "$label" "$qps" "$lost" "$(awk -v a="$avg" 'BEGIN {print a*1000}')" "$p50" "$p99" "$cpu" "$us"
    echo "$name ${label// /_} $qps $p99 $us" >>"$WORK/results"
    rm -f "$WORK/out"
}

# median NAME LABEL FIELD: the median over the rounds of one figure (3 qps, 4 p99, 5 us/query).
median() {
    awk -v n="$1" -v l="${2// /_}" -v f="$3" '$1 == n && $2 == l {print $f}' "$WORK/results" |
        sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'
}

echo "dns-svc vs dnsmasq, $N names, ${DURATION}s per run, $ROUNDS rounds, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
# Warm both up (first runs after a start are slower) at the steady rate: the steady-rate runs
# come first, before full load has heated the machine (on a VM, latency runs right after
# saturating ones measured the host's catching up, for both servers alike). Then alternate the
# servers, round after round, so that the machine's ups and downs fall on both alike.
for port in "$DNS_PORT" "$MASQ_PORT"; do
    dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries" -l 2 -Q "$RATE" -c 4 >/dev/null 2>&1
done
for _ in $(seq "$ROUNDS"); do
    run dns-svc "$DNS_PORT" "$RATE qps" -Q "$RATE" -c 4 -v
    run dnsmasq "$MASQ_PORT" "$RATE qps" -Q "$RATE" -c 4 -v
done
for _ in $(seq "$ROUNDS"); do
    run dns-svc "$DNS_PORT" "full load" -q 200 -c 4
    run dnsmasq "$MASQ_PORT" "full load" -q 200 -c 4
done
run dns-svc "$DNS_PORT" "full load -v" -q 200 -c 4 -v
run dnsmasq "$MASQ_PORT" "full load -v" -q 200 -c 4 -v

echo
echo "median of $ROUNDS rounds   full-load qps   server CPU us/query   p99 at $RATE qps"
for name in dns-svc dnsmasq; do
    printf '%-20s %15.0f %21s %15s ms\n' "$name" "$(median "$name" "full load" 3)" \
        "$(median "$name" "full load" 5)" "$(median "$name" "$RATE qps" 4)"
done
awk -v a="$(median dns-svc "full load" 3)" -v b="$(median dnsmasq "full load" 3)" \
    'BEGIN {printf "dns-svc / dnsmasq full-load qps: %.2fx\n", a/b}'
