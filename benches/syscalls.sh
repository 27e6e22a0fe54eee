#!/usr/bin/env bash
# System calls per proxied connection: runs a release dispatch (or the build
# DISPATCH names) on loopback under `strace -c -f`, drives SOCKS5 CONNECTs
# with a 32-byte echo through it for SECS seconds (examples/loadgen rate,
# CONCURRENCY clients), and prints the calls per connection and the table.
# Then the same for a bulk transfer (BULK bytes echoed through one stream,
# loadgen throughput): system calls per relayed MB (1 MB = 10^6 bytes,
# both directions counted).
#
#   benches/syscalls.sh [SECS] [CONCURRENCY]
#   DISPATCH=/path/to/older/dispatch benches/syscalls.sh
#
# Linux only; needs strace (installed with apt-get when run as root).
set -euo pipefail
secs=${1:-2}
conc=${2:-4}
port=${PORT:-18301}
cd "$(dirname "$0")/.."
if ! command -v strace >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "syscalls.sh: strace missing; run as root to install it" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q strace >/dev/null
fi
name=syscalls.sh
# shellcheck source=lib/loopback.sh
. benches/lib/loopback.sh
strace -c -f -p "$proxy" -o "$tmp/strace.txt" &
tracer=$!
sleep 0.5
line=$("$loadgen" rate "127.0.0.1:$port" "$target" "$conc" "$secs" | tail -n 1)
sleep 0.3
kill -INT "$tracer"
wait "$tracer" 2>/dev/null || true
conns=$(echo "$line" | grep -o 'conns=[0-9]*' | cut -d= -f2)
calls=$(awk '$NF == "total" {print $4}' "$tmp/strace.txt")
echo "$bin: $conns connections, $calls system calls, $(awk -v c="$calls" -v n="$conns" 'BEGIN {printf "%.1f", c / n}') per connection"
grep -v '^strace' "$tmp/strace.txt"

bulk=${BULK:-500000000}
strace -c -f -p "$proxy" -o "$tmp/strace-bulk.txt" &
tracer=$!
sleep 0.5
"$loadgen" throughput "127.0.0.1:$port" "$target" 1 "$bulk" >/dev/null
sleep 0.3
kill -INT "$tracer"
wait "$tracer" 2>/dev/null || true
calls=$(awk '$NF == "total" {print $4}' "$tmp/strace-bulk.txt")
echo "$bin: $bulk bytes echoed, $calls system calls, $(awk -v c="$calls" -v b="$bulk" 'BEGIN {printf "%.2f", c / (2 * b / 1e6)}') per MB relayed"
grep -v '^strace' "$tmp/strace-bulk.txt" | head -12
