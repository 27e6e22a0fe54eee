#!/usr/bin/env bash
# Every workload of issue 10 through benches/aggregate.sh, with weights
# 3/3/1 and with no weights, into one results file: the before/after table.
# Root only (network namespaces).
#
#   OUT=benches/results/links/NAME.txt BIN=target/release/dispatch \
#       RUNS=3 sudo -E benches/aggregate-all.sh
#
# RUNS (default 3), BIN and DISPATCH_ARGS are passed on; DEAD (default 300)
# is the dead peers of the swarm runs; DIRECT=0 skips the baselines without
# dispatch; ONLY="ranges chunks" limits the workloads (ranges, warmup,
# restart, chunks, torrent-tcp, torrent-utp, dead-tcp, dead-utp; restart
# runs only with @STATE@ in DISPATCH_ARGS, e.g. "--state-file @STATE@",
# which then applies to every workload). A workload that
# fails is noted in the file and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:?OUT=results file}
export RUNS=${RUNS:-3}
dead=${DEAD:-300}
direct=${DIRECT:-1}
only=${ONLY:-ranges warmup restart chunks torrent-tcp torrent-utp dead-tcp dead-utp}
if [ -z "${BIN:-}" ]; then
    nice cargo build --release --quiet --bin dispatch || exit 1
    BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/dispatch
fi
export BIN
unset MODE WEIGHTS WARMUP RESTART DEAD DIRECT OUT SIZE
mkdir -p "$(dirname "$out")"
{
    echo "# benches/aggregate-all.sh, $(date -u +%FT%TZ)"
    echo "# dispatch $BIN ${DISPATCH_ARGS:-}(worktree $(git describe --always --dirty 2>/dev/null || echo "?"))"
    echo "# $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), Linux $(uname -r), RUNS=$RUNS"
} >>"$out"
one() {
    echo "== $*" >&2
    env "$@" OUT="$out" nice benches/aggregate.sh >&2 || echo "# FAILED: $*" >>"$out"
}
want() { [[ " $only " == *" $1 "* ]]; }
for w in "l1/3 l2/3 l3/1" "l1 l2 l3"; do
    want ranges && one MODE=ranges WEIGHTS="$w"
    want warmup && one MODE=ranges WEIGHTS="$w" WARMUP=1
    # The first download after a restart with the state file (issue 10):
    # only when DISPATCH_ARGS names the state file (@STATE@).
    if want restart && [[ "${DISPATCH_ARGS:-}" == *@STATE@* ]]; then
        one MODE=ranges WEIGHTS="$w" RESTART=1
    fi
    want chunks && one MODE=chunks WEIGHTS="$w"
    want torrent-tcp && one MODE=torrent-tcp WEIGHTS="$w"
    want torrent-utp && one MODE=torrent-utp WEIGHTS="$w"
    want dead-tcp && one MODE=torrent-tcp WEIGHTS="$w" DEAD="$dead"
    want dead-utp && one MODE=torrent-utp WEIGHTS="$w" DEAD="$dead"
done
if [ "$direct" != 0 ]; then
    want ranges && one MODE=ranges DIRECT=1
    want chunks && one MODE=chunks DIRECT=1
fi
grep -v '^#' "$out" | grep ' runs=' >&2
