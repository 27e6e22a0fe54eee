#!/usr/bin/env bash
# Resident memory per connection: starts a release dispatch on loopback,
# holds N connections open through it (default 9,900) with examples/idle_conns,
# and prints the proxy's RSS growth per connection. Linux only (/proc).
#
#   benches/idle-memory.sh [N] [MODE]
#
# MODE: relayed (default: connected, 1 KiB echoed, then idle), partial-socks
# (one byte of a greeting sent) or partial-http (part of a request head).
# DISPATCH=path runs another build of dispatch, for a before/after figure.
set -euo pipefail
n=${1:-9900}
mode=${2:-relayed}
port=${PORT:-18080}
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin dispatch --example idle_conns
bin=${DISPATCH:-./target/release/dispatch}
ulimit -n "$(ulimit -Hn)"
export XDG_STATE_HOME=$(mktemp -d)
"$bin" start --port "$port" --handshake-timeout 600 --quiet 127.0.0.1 >/dev/null &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$XDG_STATE_HOME"' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
done
./target/release/examples/idle_conns "127.0.0.1:$port" "$pid" "$n" "$mode"
