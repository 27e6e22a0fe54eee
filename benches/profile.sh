#!/usr/bin/env bash
# Where dispatch's CPU goes: runs a release dispatch (or the build DISPATCH
# names) on loopback beside examples/loadgen's echo server, and samples it
# with `perf record -g` during
#   1. one stream: BYTES echoed through one connection (loadgen throughput);
#   2. the connection rate: SECS of SOCKS5 CONNECTs with a 32-byte echo
#      from CONCURRENCY clients (loadgen rate), as benches/compare.sh does.
# For each it prints the proxy's user and system CPU time (from
# /proc/PID/stat, so the split does not depend on perf), the share of the
# samples under each system call (children included: a loopback send also
# runs the receiving socket's processing), the share under
# sock_def_readable (telling the receiving socket's owner that data came,
# waking it if it sleeps), and the top symbols.
#
#   sudo benches/profile.sh
#   BYTES=4000000000 SECS=4 CONCURRENCY=64 DISPATCH=/path/to/dispatch sudo -E benches/profile.sh
#
# Linux only; needs perf (Debian's linux-perf, installed with apt-get when
# run as root) and, for kernel symbols, root or kernel.perf_event_paranoid
# at most 1. Traffic stays on 127.0.0.1, port PORT (18302).
set -euo pipefail
cd "$(dirname "$0")/.."
bytes=${BYTES:-4000000000}
secs=${SECS:-4}
conc=${CONCURRENCY:-64}
port=${PORT:-18302}
if ! command -v perf >/dev/null || ! perf --version >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "profile.sh: perf missing; run as root to install it" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q linux-perf >/dev/null
fi
name=profile.sh
# shellcheck source=lib/loopback.sh
. benches/lib/loopback.sh
tick=$(getconf CLK_TCK)

# cpu: the proxy's user and system CPU seconds so far.
cpu() { awk -v t="$tick" '{printf "%.3f %.3f", $14 / t, $15 / t}' "/proc/$proxy/stat"; }

# profile NAME COMMAND...: perf record on the proxy while COMMAND runs.
profile() {
    local name=$1
    shift
    local before after
    before=$(cpu)
    perf record -F 4000 -g -p "$proxy" -o "$tmp/$name.data" >/dev/null 2>"$tmp/$name.perf-err" &
    local rec=$!
    sleep 0.3
    local line
    line=$("$@" | tail -n 1)
    kill -INT "$rec" 2>/dev/null || true
    wait "$rec" 2>/dev/null || true
    [ -s "$tmp/$name.data" ] || { echo "profile.sh: perf recorded nothing:" >&2; cat "$tmp/$name.perf-err" >&2; exit 1; }
    after=$(cpu)
    echo "== $name: $line"
    awk -v b="$before" -v a="$after" 'BEGIN {
        split(b, x, " "); split(a, y, " ");
        u = y[1] - x[1]; s = y[2] - x[2];
        printf "proxy CPU: %.2f s user, %.2f s system (%.0f%% system)\n", u, s, (u + s > 0 ? 100 * s / (u + s) : 0)
    }'
    perf report -i "$tmp/$name.data" --children --sort sym --stdio -g none >"$tmp/$name.children" 2>/dev/null
    perf report -i "$tmp/$name.data" --no-children --sort sym --stdio -g none >"$tmp/$name.self" 2>/dev/null
    echo "share of samples under each system call (children included):"
    awk '$3 == "[k]" && $4 ~ /^__(x64|arm64)_sys_/ && n++ < 12 {sub(/^__(x64|arm64)_sys_/, "", $4); printf "  %-14s %s\n", $4, $1}' "$tmp/$name.children"
    echo "share under sock_def_readable (data came: tell, and wake, the reader):"
    awk '$4 == "sock_def_readable" {print "  " $1}' "$tmp/$name.children"
    echo "top symbols (self):"
    awk '$1 ~ /%$/ && n++ < 8 {printf "  %-8s %s %s\n", $1, $2, $3}' "$tmp/$name.self"
}

profile one-stream "$loadgen" throughput "127.0.0.1:$port" "$target" 1 "$bytes" "$proxy"
profile rate "$loadgen" rate "127.0.0.1:$port" "$target" "$conc" "$secs"
