#!/usr/bin/env bash
# dispatch beside other SOCKS5 servers (Debian's dante-server and microsocks)
# and the direct path, on loopback, driven by one load generator of this
# project (examples/loadgen.rs) that checks every byte that comes back.
#
#   sudo benches/compare.sh            # as root: installs what is missing
#   ROUNDS=5 BYTES=1000000000 sudo -E benches/compare.sh
#   BASELINE=/path/to/an/older/dispatch sudo -E benches/compare.sh
#   GOSPLICE=1 sudo -E benches/compare.sh
#
# With BASELINE, that build of dispatch runs beside the current one as the
# subject "baseline", so a change is measured before and after in one run.
# With GOSPLICE=1, benches/peers/gosplice (a minimal SOCKS5 relay in Go,
# io.Copy both ways, which Go turns into splice(2) on Linux: the technique
# of go-dispatch-proxy) runs as the subject "gosplice"; Debian's golang-go
# is installed for it when missing. A reference peer for the benchmark
# only: nothing of dispatch is built with Go.
#
# Each round runs every test against every server, the servers interleaved
# (direct dispatch microsocks dante, then again), so a slow spell of this
# shared machine hits them all alike. Tests, per round and server:
#   tp1, tp8  BYTES of payload echoed through 1 and 8 streams at once
#             (GB/s one way; CPU seconds of the server's processes per GB
#             relayed, both directions counted)
#   rate      SOCKS5 CONNECTs per second from 64 concurrent clients for RATE_SECS,
#             each checking a 32-byte echo; p50/p99 of the connect-to-reply time
#   idle      memory (PSS of the server's process tree) per connection with
#             IDLE connections held open and idle after a 1 KiB echo
#   udp       UDP_COUNT datagrams of 1,200 bytes echoed through one UDP
#             ASSOCIATE to UDP_DESTS destinations, UDP_WINDOW in flight
#             (round trips per second; CPU seconds per GB relayed, both
#             directions counted), after 2,000 one at a time for the round
#             trip's p50/p99; every datagram checked. Not microsocks (it
#             has no UDP ASSOCIATE), nor gosplice (CONNECT only).
# and once, after the rounds:
#   held      the most connections each holds: opened one after another
#             until one fails or stalls, MAX_HELD are open, or MAX_SECS pass
# Results: benches/results/compare.tsv (raw lines), compare.md (the README
# table: median of the rounds, min–max) and compare.svg (the chart).
# TESTS picks some of them (default: "tp1 tp8 rate idle held udp"), e.g.
# TESTS=udp sudo -E benches/compare.sh for the UDP figures alone.
# Linux only. Traffic stays on 127.0.0.1. Ports: PORT_BASE..PORT_BASE+4.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${ROUNDS:-5}
bytes=${BYTES:-1000000000}
rate_secs=${RATE_SECS:-4}
idle=${IDLE:-5000}
max_held=${MAX_HELD:-12000}
max_secs=${MAX_SECS:-120}
udp_count=${UDP_COUNT:-200000}
udp_dests=${UDP_DESTS:-1000}
udp_window=${UDP_WINDOW:-32}
tests=" ${TESTS:-tp1 tp8 rate idle held udp} "
want() { [[ $tests == *" $1 "* ]]; }
port_base=${PORT_BASE:-18180}
out=${OUT:-benches/results}
mkdir -p "$out"

need=()
command -v danted >/dev/null || [ -x /usr/sbin/danted ] || need+=(dante-server)
command -v microsocks >/dev/null || need+=(microsocks)
gosplice=${GOSPLICE:-}
[ -n "$gosplice" ] && ! command -v go >/dev/null && need+=(golang-go)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "compare.sh: ${need[*]} missing; run as root to install them" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need[@]}"
fi
danted=$(command -v danted || echo /usr/sbin/danted)

cargo build --release --quiet --bin dispatch --example loadgen
loadgen=target/release/examples/loadgen
dispatch=target/release/dispatch

# Every process here gets the same descriptor limit: the hard limit.
ulimit -n "$(ulimit -Hn)"

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "compare.sh: nothing listens on 127.0.0.1:$1; the servers said:" >&2
    tail -n 5 "$tmp"/*.log "$tmp"/*.out >&2 || true
    exit 1
}

# The echo server all tests talk to.
"$loadgen" serve 127.0.0.1:0 >"$tmp/echo.out" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$tmp/echo.out" && break; sleep 0.05; done
target=$(awk '/listening/ {print $2}' "$tmp/echo.out")

p_dispatch=$port_base
p_microsocks=$((port_base + 1))
p_dante=$((port_base + 2))
p_baseline=$((port_base + 3))
p_gosplice=$((port_base + 4))
baseline=${BASELINE:-}
if [ -n "$gosplice" ]; then
    (cd benches/peers/gosplice && GOCACHE=${GOCACHE:-$tmp/gocache} go build -o "$tmp/gosplice" .)
fi

# dante: no authentication, loopback only both ways, in the foreground (no -D).
# Its unprivileged user needs to write its TMPDIR.
mkdir -m 1777 "$tmp/dante-tmp"
cat >"$tmp/danted.conf" <<EOF
logoutput: $tmp/danted.log
internal: 127.0.0.1 port = $p_dante
external: 127.0.0.1
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {
    from: 127.0.0.0/8 to: 127.0.0.0/8
}
socks pass {
    from: 127.0.0.0/8 to: 127.0.0.0/8
    command: connect udpassociate
}
socks pass {
    from: 127.0.0.0/8 to: 127.0.0.0/8
    command: udpreply
}
EOF

start() { # server: starts it, sets pid_<server>
    case $1 in
    dispatch) # one local address, the loopback one, as target
        XDG_STATE_HOME=$tmp "$dispatch" start --port "$p_dispatch" 127.0.0.1 >>"$tmp/dispatch.log" 2>&1 &
        ;;
    baseline)
        XDG_STATE_HOME=$tmp "$baseline" start --port "$p_baseline" 127.0.0.1 >>"$tmp/baseline.log" 2>&1 &
        ;;
    gosplice)
        "$tmp/gosplice" "127.0.0.1:$p_gosplice" >>"$tmp/gosplice.log" 2>&1 &
        ;;
    microsocks)
        microsocks -i 127.0.0.1 -p "$p_microsocks" >>"$tmp/microsocks.log" 2>&1 &
        ;;
    dante)
        TMPDIR=$tmp/dante-tmp "$danted" -f "$tmp/danted.conf" >>"$tmp/danted.out" 2>&1 &
        ;;
    esac
    eval "pid_$1=$!"
    pids+=($!)
    wait_port "$(eval echo "\$p_$1")"
    # Something else may hold the port (another run of this script): then
    # ours has exited, and the figures would be another server's.
    sleep 0.2
    if ! kill -0 "$(eval echo "\$pid_$1")" 2>/dev/null; then
        echo "compare.sh: $1 exited at start (port $(eval echo "\$p_$1") in use? set PORT_BASE)" >&2
        tail -n 5 "$tmp"/*.log "$tmp"/*.out >&2 || true
        exit 1
    fi
}

# A fresh process, so the memory measured is what these connections cost,
# not what an earlier round left allocated.
restart() {
    local pid
    pid=$(eval echo "\$pid_$1")
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$(eval echo "\$p_$1")") 2>/dev/null || break
        sleep 0.05
    done
    start "$1"
    sleep 0.5
}

subjects=(direct dispatch)
[ -n "$baseline" ] && subjects+=(baseline)
[ -n "$gosplice" ] && subjects+=(gosplice)
subjects+=(microsocks dante)
for s in "${subjects[@]}"; do [ "$s" = direct ] || start "$s"; done

addr_of() { case $1 in direct) echo direct ;; *) eval echo "127.0.0.1:\$p_$1" ;; esac; }
pid_of() { case $1 in direct) echo "" ;; *) eval echo "\$pid_$1" ;; esac; }

tsv=$out/compare.tsv
: >"$tsv"
run() { # round subject test command...
    local round=$1 subject=$2 test=$3
    shift 3
    local line
    # A server that stalls fails the run instead of hanging the script.
    line=$(timeout 300 "$@" 2>>"$tmp/loadgen.err" | tail -n 1) || true
    [ -n "$line" ] || line="$test ok=0 error=no_result_within_300_s"
    printf '%s\t%s\t%s\t%s\n' "$round" "$subject" "$test" "$line" | tee -a "$tsv"
}

for round in $(seq "$rounds"); do
    for s in "${subjects[@]}"; do
        want tp1 || break
        run "$round" "$s" tp1 "$loadgen" throughput "$(addr_of "$s")" "$target" 1 "$bytes" $(pid_of "$s")
    done
    for s in "${subjects[@]}"; do
        want tp8 || break
        run "$round" "$s" tp8 "$loadgen" throughput "$(addr_of "$s")" "$target" 8 "$bytes" $(pid_of "$s")
    done
    for s in "${subjects[@]}"; do
        want rate || break
        run "$round" "$s" rate "$loadgen" rate "$(addr_of "$s")" "$target" 64 "$rate_secs"
        sleep 1
    done
    for s in "${subjects[@]}"; do
        want udp || break
        [ "$s" = microsocks ] || [ "$s" = gosplice ] && continue
        run "$round" "$s" udp "$loadgen" udp "$(addr_of "$s")" "$udp_dests" "$udp_count" "$udp_window" $(pid_of "$s")
    done
    for s in "${subjects[@]}"; do
        want idle || break
        [ "$s" = direct ] && continue
        restart "$s"
        run "$round" "$s" idle "$loadgen" idle "$(addr_of "$s")" "$target" "$(pid_of "$s")" "$idle" "$idle"
        # Let the server close what the load generator dropped.
        sleep 3
    done
done
# The most each could hold: once, at the end, up to MAX_HELD or MAX_SECS.
for s in "${subjects[@]}"; do
    want held || break
    [ "$s" = direct ] && continue
    restart "$s"
    run 0 "$s" held "$loadgen" idle "$(addr_of "$s")" "$target" "$(pid_of "$s")" "$idle" "$max_held" "$max_secs"
    sleep 3
done

cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
machine="$(date -u +%Y-%m-%d) on $(nproc) cores of $cpu, Linux $(uname -r); dispatch ${DISPATCH_REV:-$(git rev-parse --short HEAD 2>/dev/null || echo '?')}, microsocks $(dpkg-query -W -f '${Version}' microsocks 2>/dev/null || echo '?'), dante $(dpkg-query -W -f '${Version}' dante-server 2>/dev/null || echo '?')${gosplice:+, gosplice built with $(go version | awk '{print $3}')}"
"$loadgen" report "$tsv" "$out/compare.md" "$out/compare.svg" "$machine"
