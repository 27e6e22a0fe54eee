#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/*.rs) for MINUTES each, on
# nightly with cargo-fuzz (both installed if missing), and prints one line
# per target: executions, executions per second, coverage (libFuzzer's
# `cov`, edges reached), features, corpus size, and crashes.
#
#   benches/fuzz.sh 60                 # an hour per target, one after another
#   JOBS=2 benches/fuzz.sh 60          # two targets at a time (2 cores)
#   benches/fuzz.sh 5 http_parse conn  # only these targets
#   OUT=benches/results/fuzz.txt benches/fuzz.sh 60   # also append the table
#
# Each target grows its corpus in fuzz/corpus/<target>/ (only committed
# `seed-*` files are tracked; what a run adds stays untracked until chosen),
# and a crash is written to fuzz/artifacts/<target>/ and stops that target:
# the table then says `CRASH` and where, and the script exits 1. Logs are
# kept in $LOGS (default /tmp/dispatch-fuzz) for reading afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${1:-10}
shift || true
jobs=${JOBS:-1}
logs=${LOGS:-/tmp/dispatch-fuzz}
mkdir -p "$logs"

if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$f" .rs)")
    done
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# One build for all, so the clock of each run measures fuzzing only.
(cd fuzz && cargo +nightly fuzz build -O >/dev/null)

run_one() {
    local t=$1 log=$logs/$1.log
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    local before
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    # -print_final_stats gives the executions; the last status line gives
    # coverage and corpus size. A crash ends the run with a non-zero code.
    local rc=0
    (cd fuzz && cargo +nightly fuzz run -O "$t" -- \
        -max_total_time=$((minutes * 60)) -print_final_stats=1 \
        -timeout=10 -rss_limit_mb=2048) >"$log" 2>&1 || rc=$?
    local execs rate cov ft corp crashes
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    corp=$(find "fuzz/corpus/$t" -type f | wc -l)
    crashes=$(($(find "fuzz/artifacts/$t" -type f | wc -l) - before))
    local verdict=clean
    if [ "$rc" != 0 ] || [ "$crashes" != 0 ]; then
        verdict="CRASH (exit $rc, see $log and fuzz/artifacts/$t)"
    fi
    printf '%-12s %4s min  %12s execs  %8s/s  cov %6s  ft %6s  corpus %6s  %s\n' \
        "$t" "$minutes" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$corp" "$verdict" \
        >"$logs/$t.line"
    [ "$verdict" = clean ]
}

echo "# fuzz.sh $minutes min per target, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r), jobs $jobs"
failed=0
pids=()
for t in "${targets[@]}"; do
    run_one "$t" &
    pids+=($!)
    if [ "${#pids[@]}" -ge "$jobs" ]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do
    wait "$p" || failed=1
done
table=$(for t in "${targets[@]}"; do cat "$logs/$t.line"; done)
echo "$table"
if [ -n "${OUT:-}" ]; then
    {
        echo "# fuzz.sh $minutes min per target, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r)"
        echo "$table"
    } >>"$OUT"
fi
exit "$failed"
