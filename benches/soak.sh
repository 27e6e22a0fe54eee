#!/usr/bin/env bash
# Soak test (issue 11): hours of mixed, byte-checked traffic through two
# dispatch processes on loopback, with RSS, descriptors and counters sampled
# every minute. Fails (exit 1) on any wrong byte, any unexpected error, or
# RSS/descriptors that keep growing. The load and the verdict are in
# benches/soak/soak.py, whose header says what runs and how growth is judged.
#
#   benches/soak.sh [SECONDS]        (default 3600)
#
# BIN=path runs another build of dispatch instead of target/release.
# SAMPLE=secs (default 60, shorter for runs under 30 min), SOAK_WORKERS (8),
# SOAK_RATE (bulk bytes/s, all workers together, 8e6), OUT=dir keeps the
# proxies' logs there (default: a temporary directory).
# Linux only (/proc; every 127.x address is local). Needs python3.
# tests/soak.rs runs the same load for 2 minutes against the debug build.
set -euo pipefail
seconds=${1:-3600}
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet --bin dispatch
    BIN=./target/release/dispatch
fi
ulimit -n "$(ulimit -Hn)"
echo "# dispatch soak, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "# $(git describe --always --dirty 2>/dev/null || echo '?') on $(uname -srm), $(nproc) cores," \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
args=(--seconds "$seconds" --bin "$BIN")
[ -n "${SAMPLE:-}" ] && args+=(--sample "$SAMPLE")
[ -n "${OUT:-}" ] && args+=(--out "$OUT")
exec python3 -u benches/soak/soak.py "${args[@]}"
