#!/usr/bin/env bash
# dns-svc against dnsmasq, both serving the same names, in three rows (ROWS):
#
#   loopback  dns-svc's operator listener and dnsmasq, both on 127.0.0.1, N names queried as
#             n<i>.bench.weft in order, dnsperf in the machine's namespace (loopback only);
#   sandbox   the path containers use: dns-svc's 127.0.0.11:53 listener inside a sandbox's
#             namespace, with dnsperf in that namespace; beside it dnsmasq on 127.0.0.11:53 in a
#             namespace of its own, with dnsperf in that one. N names, asked as a container
#             asks (bare n<i>), in random order;
#   big       the sandbox row with a world of BIG (100,000) names, asked in random order.
#
# Each row: dnsperf for DURATION s at full load, then at a steady RATE qps, the two servers
# alternating (every row in every round) for ROUNDS rounds; prints every run (qps, latency
# average, p50 and p99 from dnsperf's per-query -v lines, the server's CPU and CPU time per
# query), then the medians and, per row, dns-svc's full-load qps over dnsmasq's.
#
#   bench/dns.sh                  # N=1000 BIG=100000 DURATION=5 RATE=2000 ROUNDS=5 by default
#   ROWS="sandbox big" DURATION=10 bench/dns.sh
#
# dns-svc gets its records from a fake gateway (dns-svc/examples/bench_gateway.rs: its real
# input path, the gateway's Watch stream), which also writes the hosts file dnsmasq serves
# (--addn-hosts, --no-resolv: no upstream either way). For the sandbox rows the fake gateway
# also sends sandbox `client` of dns-svc's host with the namespace the bench made for it: dns-svc
# opens the listener in there itself, exactly as for a container (entering the namespace on a
# thread of its own, its development mode without --broker; with the agent's broker the agent
# makes the same sockets in the same namespace). Needs root for the namespaces; everything
# runs on loopback or in the bench's own namespaces, which are deleted on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-1000}
BIG=${BIG:-100000}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-5}
RATE=${RATE:-2000}
ROWS=${ROWS:-loopback sandbox big}
GW_PORT=${GW_PORT:-17790}
ADMIN_PORT=${ADMIN_PORT:-17793}
DNS_PORT=${DNS_PORT:-15390}
MASQ_PORT=${MASQ_PORT:-15391}
# The big world's dns-svc (its operator listener is not measured, but every dns-svc has one).
BIG_GW_PORT=${BIG_GW_PORT:-17794}
BIG_ADMIN_PORT=${BIG_ADMIN_PORT:-17795}
BIG_DNS_PORT=${BIG_DNS_PORT:-15392}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/weft/target-dns}

for row in $ROWS; do
    case $row in
    loopback | sandbox | big) ;;
    *) echo "ROWS: unknown row $row (loopback, sandbox, big)" >&2; exit 2 ;;
    esac
done
has_row() { [[ " $ROWS " == *" $1 "* ]]; }
for v in N BIG DURATION ROUNDS RATE; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$v=${!v}: a positive integer" >&2; exit 2; }
done
# The fake gateway's addresses (10.90.0.0/15, 250 a /24) hold 125,000 names.
for v in N BIG; do
    [ "${!v}" -le 125000 ] || { echo "$v=${!v}: at most 125000 names" >&2; exit 2; }
done
if { has_row sandbox || has_row big; } && [ "$(id -u)" != 0 ]; then
    echo "the sandbox rows need root (network namespaces); ROWS=loopback runs without" >&2
    exit 1
fi

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
NETNS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A namespace of the bench's own with its loopback up (what the agent does for a sandbox).
new_netns() {
    ip netns add "$1"
    NETNS+=("$1")
    ip -n "$1" link set lo up
}

# in_ns NS CMD...: CMD inside namespace NS, or here when NS is empty.
in_ns() {
    local ns=$1
    shift
    if [ -n "$ns" ]; then ip netns exec "$ns" "$@"; else "$@"; fi
}

# Per row and server: namespace, address, port, process, query file. Keys "<server>/<row>".
declare -A NS ADDR PORT PID QUERIES
P=wft-dnsb-$$

# dns_svc WORLD GW_PORT ADMIN_PORT DNS_PORT NAMES SANDBOX_NS: a fake gateway with NAMES names
# (and sandbox `client` in SANDBOX_NS, if given) and a dns-svc following it; sets DNS_PID.
dns_svc() {
    local world=$1 gw=$2 admin=$3 port=$4 names=$5 sbns=$6 client=()
    [ -n "$sbns" ] && client=(--client-netns "/run/netns/$sbns")
    "$GATEWAY" "127.0.0.1:$gw" "$names" --hosts "$WORK/hosts-$world" "${client[@]}" \
        >"$WORK/gateway-$world.log" 2>&1 &
    PIDS+=($!)
    "$BIN/dns-svc" --listen "127.0.0.1:$admin" --gateway "http://127.0.0.1:$gw" \
        --host bench --operator-listen "127.0.0.1:$port" --upstream 127.0.0.1:9 \
        --insecure-plaintext --log-filter warn >"$WORK/dns-svc-$world.log" 2>&1 &
    DNS_PID=$!
    PIDS+=($!)
}

# dnsmasq_in NS ADDR PORT HOSTS TAG: dnsmasq serving HOSTS on ADDR:PORT (in NS, or here); sets
# MASQ_PID.
dnsmasq_in() {
    local ns=$1 addr=$2 port=$3 hosts=$4 tag=$5 pre=()
    # `ip netns exec` execs dnsmasq: $! is dnsmasq's pid (a shell function would fork).
    [ -n "$ns" ] && pre=(ip netns exec "$ns")
    until [ -s "$hosts" ]; do sleep 0.1; done
    "${pre[@]}" dnsmasq --keep-in-foreground --no-resolv --no-hosts --addn-hosts="$hosts" \
        --listen-address="$addr" --bind-interfaces --port="$port" \
        --pid-file="$WORK/dnsmasq-$tag.pid" --cache-size=10000 --user=root --log-facility=- \
        >"$WORK/dnsmasq-$tag.log" 2>&1 &
    MASQ_PID=$!
    PIDS+=($!)
}

# A random order of all the names of a world: "n<i> A" lines.
shuffled() { seq 0 $(($1 - 1)) | shuf | awk '{print "n" $1 " A"}'; }

if has_row loopback || has_row sandbox; then
    sbns=
    if has_row sandbox; then
        sbns=$P-sb
        new_netns "$sbns"
        new_netns "$P-mq"
    fi
    dns_svc small "$GW_PORT" "$ADMIN_PORT" "$DNS_PORT" "$N" "$sbns"
    small_pid=$DNS_PID
    if has_row loopback; then
        dnsmasq_in "" 127.0.0.1 "$MASQ_PORT" "$WORK/hosts-small" lo
        for i in $(seq 0 $((N - 1))); do echo "n$i.bench.weft A"; done >"$WORK/q-loopback"
        NS[dns-svc/loopback]=; ADDR[dns-svc/loopback]=127.0.0.1; PORT[dns-svc/loopback]=$DNS_PORT
        PID[dns-svc/loopback]=$small_pid; QUERIES[dns-svc/loopback]=$WORK/q-loopback
        NS[dnsmasq/loopback]=; ADDR[dnsmasq/loopback]=127.0.0.1; PORT[dnsmasq/loopback]=$MASQ_PORT
        PID[dnsmasq/loopback]=$MASQ_PID; QUERIES[dnsmasq/loopback]=$WORK/q-loopback
    fi
    if has_row sandbox; then
        dnsmasq_in "$P-mq" 127.0.0.11 53 "$WORK/hosts-small" sb
        shuffled "$N" >"$WORK/q-sandbox"
        NS[dns-svc/sandbox]=$sbns; ADDR[dns-svc/sandbox]=127.0.0.11; PORT[dns-svc/sandbox]=53
        PID[dns-svc/sandbox]=$small_pid; QUERIES[dns-svc/sandbox]=$WORK/q-sandbox
        NS[dnsmasq/sandbox]=$P-mq; ADDR[dnsmasq/sandbox]=127.0.0.11; PORT[dnsmasq/sandbox]=53
        PID[dnsmasq/sandbox]=$MASQ_PID; QUERIES[dnsmasq/sandbox]=$WORK/q-sandbox
    fi
fi
if has_row big; then
    new_netns "$P-sbbig"
    new_netns "$P-mqbig"
    dns_svc big "$BIG_GW_PORT" "$BIG_ADMIN_PORT" "$BIG_DNS_PORT" "$BIG" "$P-sbbig"
    dnsmasq_in "$P-mqbig" 127.0.0.11 53 "$WORK/hosts-big" big
    shuffled "$BIG" >"$WORK/q-big"
    NS[dns-svc/big]=$P-sbbig; ADDR[dns-svc/big]=127.0.0.11; PORT[dns-svc/big]=53
    PID[dns-svc/big]=$DNS_PID; QUERIES[dns-svc/big]=$WORK/q-big
    NS[dnsmasq/big]=$P-mqbig; ADDR[dnsmasq/big]=127.0.0.11; PORT[dnsmasq/big]=53
    PID[dnsmasq/big]=$MASQ_PID; QUERIES[dnsmasq/big]=$WORK/q-big
fi

# The address of name n<i> (as the fake gateway gives it).
ip_of() { echo "10.$((90 + $1 / 62500)).$(($1 / 250 % 250)).$(($1 % 250 + 1))"; }

# Every server answers the last name of its world before anything is measured (the sandbox
# listener is there once dns-svc has the records and opened it in the namespace).
for row in $ROWS; do
    [ "$row" = big ] && last=$((BIG - 1)) || last=$((N - 1))
    [ "$row" = loopback ] && name=n$last.bench.weft || name=n$last
    want=$(ip_of "$last")
    for server in dns-svc dnsmasq; do
        k=$server/$row
        got=
        for _ in $(seq 150); do
            got=$(in_ns "${NS[$k]}" dig +short +time=1 +tries=1 -p "${PORT[$k]}" \
                "@${ADDR[$k]}" "$name" A 2>/dev/null || true)
            [ "$got" = "$want" ] && break
            sleep 0.2
        done
        # The answer must come from the process started here, not from a leftover on the port.
        [ "$got" = "$want" ] && kill -0 "${PID[$k]}" 2>/dev/null || {
            echo "$server ($row) does not answer $name ($got, want $want), or has exited" >&2
            cat "$WORK"/*.log >&2
            exit 1
        }
    done
done

# run SERVER ROW LABEL [dnsperf flags...]: one dnsperf run, one result line; with -v among the
# flags the latency percentiles come from dnsperf's per-query lines (-v costs dnsperf much CPU,
# so the full-load capacity runs go without it).
run() {
    local name=$1 row=$2 label=$3 k=$1/$2
    shift 3
    local pid=${PID[$k]} c0 c1
    c0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    in_ns "${NS[$k]}" dnsperf -s "${ADDR[$k]}" -p "${PORT[$k]}" -d "${QUERIES[$k]}" \
        -l "$DURATION" "$@" >"$WORK/out" 2>&1
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
    printf '%-8s %-9s %-12s qps %10.0f  lost %-12s avg %7.3f ms  p50 %6s ms  p99 %6s ms  CPU %3s %%  %5s us/query\n' \
        "$name" "$row" "$label" "$qps" "$lost" "$(awk -v a="$avg" 'BEGIN {print a*1000}')" "$p50" "$p99" "$cpu" "$us"
    echo "$name $row ${label// /_} $qps $p99 $us" >>"$WORK/results"
    rm -f "$WORK/out"
}

# median NAME ROW LABEL FIELD: the median over the rounds of one figure (4 qps, 5 p99,
# 6 us/query).
median() {
    awk -v n="$1" -v r="$2" -v l="${3// /_}" -v f="$4" '$1 == n && $2 == r && $3 == l {print $f}' \
        "$WORK/results" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'
}

rows_desc() {
    for row in $ROWS; do
        case $row in
        loopback) printf '  loopback: operator listener on 127.0.0.1, %s names\n' "$N" ;;
        sandbox) printf '  sandbox:  127.0.0.11 inside a sandbox namespace, %s names, random order\n' "$N" ;;
        big) printf '  big:      127.0.0.11 inside a sandbox namespace, %s names, random order\n' "$BIG" ;;
        esac
    done
}
echo "dns-svc vs dnsmasq, ${DURATION}s per run, $ROUNDS rounds, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
rows_desc
# Warm every server up (first runs after a start are slower) at the steady rate: the
# steady-rate runs come first, before full load has heated the machine (on a VM, latency runs
# right after saturating ones measured the host's catching up, for both servers alike). Then
# alternate the servers, round after round, so that the machine's ups and downs fall on both
# alike.
for row in $ROWS; do
    for server in dns-svc dnsmasq; do
        k=$server/$row
        in_ns "${NS[$k]}" dnsperf -s "${ADDR[$k]}" -p "${PORT[$k]}" -d "${QUERIES[$k]}" \
            -l 2 -Q "$RATE" -c 4 >/dev/null 2>&1
    done
done
for _ in $(seq "$ROUNDS"); do
    for row in $ROWS; do
        run dns-svc "$row" "$RATE qps" -Q "$RATE" -c 4 -v
        run dnsmasq "$row" "$RATE qps" -Q "$RATE" -c 4 -v
    done
done
for _ in $(seq "$ROUNDS"); do
    for row in $ROWS; do
        run dns-svc "$row" "full load" -q 200 -c 4
        run dnsmasq "$row" "full load" -q 200 -c 4
    done
done
for row in $ROWS; do
    run dns-svc "$row" "full load -v" -q 200 -c 4 -v
    run dnsmasq "$row" "full load -v" -q 200 -c 4 -v
done

echo
echo "median of $ROUNDS rounds        full-load qps   server CPU us/query   p99 at $RATE qps"
for row in $ROWS; do
    for name in dns-svc dnsmasq; do
        printf '%-8s %-16s %15.0f %21s %15s ms\n' "$name" "$row" "$(median "$name" "$row" "full load" 4)" \
            "$(median "$name" "$row" "full load" 6)" "$(median "$name" "$row" "$RATE qps" 5)"
    done
done
for row in $ROWS; do
    awk -v r="$row" -v a="$(median dns-svc "$row" "full load" 4)" -v b="$(median dnsmasq "$row" "full load" 4)" \
        'BEGIN {printf "%-9s dns-svc / dnsmasq full-load qps: %.2fx\n", r, a/b}'
done
echo "load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
