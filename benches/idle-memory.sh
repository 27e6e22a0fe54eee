#!/usr/bin/env bash
# Resident memory per idle connection: starts a release dispatch on loopback,
# holds N connections open through it (default 9,900) with examples/idle_conns,
# and prints the proxy's RSS growth per connection. Linux only (/proc).
set -euo pipefail
n=${1:-9900}
port=${PORT:-18080}
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin dispatch --example idle_conns
ulimit -n "$(ulimit -Hn)"
export XDG_STATE_HOME=$(mktemp -d)
./target/release/dispatch start --port "$port" 127.0.0.1 >/dev/null &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$XDG_STATE_HOME"' EXIT
sleep 0.5
./target/release/examples/idle_conns "127.0.0.1:$port" "$pid" "$n"
