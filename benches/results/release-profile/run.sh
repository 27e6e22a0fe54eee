#!/usr/bin/env bash
# Which [profile.release] to ship, by measurement. Each candidate is built
# from a clean copy of the committed tree (HEAD at start), in its own empty target
# directory, which gives its clean build time and binary size; then
# benches/compare.sh runs it beside the reference build (BASELINE=), the two
# interleaved in each round, medians of the rounds.
#
#   sudo benches/results/release-profile/run.sh              # every candidate
#   sudo benches/results/release-profile/run.sh thin fat     # some of them
#   TAG=-2 ROUNDS=9 sudo -E benches/results/release-profile/run.sh fat-cgu1
#                                      # again, its results in fat-cgu1-2/
#
# Candidate "same" has the reference's profile: an A/A run, which shows
# what the noise and compare.sh's fixed order (the candidate runs just
# before the reference in each round) make of two equal builds.
#
# The reference is what Cargo.toml had before this measurement: lto = false,
# codegen-units = 16 (cargo's release defaults), debug = 1. Each build sets
# both knobs through CARGO_PROFILE_RELEASE_* so the figures do not depend on
# what Cargo.toml says now; debug comes from Cargo.toml. panic stays "unwind".
# Results, beside this script: CANDIDATE/compare.{tsv,md} (compare.sh's
# own), builds.tsv (clean build seconds, binary bytes, stripped bytes) and
# summary.md (per test, the median over rounds of candidate / reference in
# the same round: > 1 is better for gbps and per_sec, < 1 for p50/p99/cpu).
# ROUNDS (5) and TESTS ("tp1 tp8 rate udp") go to compare.sh. Linux only;
# traffic stays on 127.0.0.1 (PORT_BASE, default 28480..28483).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
work=${WORK:-/tmp/dispatch-release-profile}
# One commit for every build of the run, taken now: HEAD may move meanwhile.
commit=$(git -C "$repo" rev-parse HEAD)
rev=${commit:0:7}
candidates=("$@")
[ ${#candidates[@]} -gt 0 ] || candidates=(thin fat cgu1 fat-cgu1)

knobs() { # candidate -> "LTO CODEGEN_UNITS"
    case $1 in
    reference | same) echo "false 16" ;;
    thin) echo "thin 16" ;;
    fat) echo "fat 16" ;;
    cgu1) echo "false 1" ;;
    thin-cgu1) echo "thin 1" ;;
    fat-cgu1) echo "fat 1" ;;
    *) echo "run.sh: unknown candidate $1" >&2; exit 2 ;;
    esac
}

builds=$here/builds.tsv
[ -f "$builds" ] || printf 'date\tcandidate\tlto\tcodegen_units\tclean_build_s\tbinary_bytes\tstripped_bytes\n' >"$builds"

build() { # candidate [name]: clean copy, clean build, timed
    local c=$1 lto cgu
    read -r lto cgu <<<"$(knobs "$c")"
    local name=${2:-$c}
    rm -rf "${work:?}/$c"
    mkdir -p "$work/$c"
    git -C "$repo" archive "$commit" | tar -x -C "$work/$c"
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$work/$c" && CARGO_PROFILE_RELEASE_LTO=$lto CARGO_PROFILE_RELEASE_CODEGEN_UNITS=$cgu \
        cargo build --release --quiet --locked --bin dispatch)
    t1=$(date +%s.%N)
    local bin=$work/$c/target/release/dispatch
    strip -o "$work/$c.stripped" "$bin"
    printf '%s\t%s\t%s\t%s\t%.1f\t%s\t%s\n' "$(date -u +%FT%TZ)" "$name" "$lto" "$cgu" \
        "$(echo "$t1 - $t0" | bc)" "$(stat -c %s "$bin")" "$(stat -c %s "$work/$c.stripped")" | tee -a "$builds"
}

# The reference is built again unless it is of this very commit.
if [ "$(cat "$work/reference.commit" 2>/dev/null)" != "$commit" ]; then
    build reference
    echo "$commit" >"$work/reference.commit"
fi
for c in "${candidates[@]}"; do
    name=$c${TAG:-}
    build "$c" "$name"
    read -r lto cgu <<<"$(knobs "$c")"
    mkdir -p "$here/$name"
    (cd "$work/$c" && CARGO_PROFILE_RELEASE_LTO=$lto CARGO_PROFILE_RELEASE_CODEGEN_UNITS=$cgu \
        BASELINE="$work/reference/target/release/dispatch" OUT="$here/$name" \
        ROUNDS=${ROUNDS:-5} TESTS=${TESTS:-tp1 tp8 rate udp} PORT_BASE=${PORT_BASE:-28480} \
        DISPATCH_REV="$rev, profile $name (baseline: reference profile)" benches/compare.sh)
    rm -f "$here/$name/compare.svg"
done

# Paired ratios: candidate / reference within each round, then the median.
{
    echo "Per test, median over rounds of (candidate / reference in the same round);"
    echo "gbps and per_sec: higher is better; cpu_s_per_gb, p50_ms, p99_ms: lower is better."
    echo
    echo "| candidate | tp1 gbps | tp8 gbps | tp1 cpu/GB | tp8 cpu/GB | rate per_sec | rate p50 | rate p99 | udp per_sec | udp cpu/GB | clean build s | bytes (stripped) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for d in "$here"/*/; do
        c=$(basename "$d")
        [ -f "$d/compare.tsv" ] || continue
        awk -F'\t' -v c="$c" -v builds="$builds" '
            function val(line, key,   n, i, kv) {
                n = split(line, kv, " ")
                for (i = 1; i <= n; i++) if (index(kv[i], key "=") == 1) return substr(kv[i], length(key) + 2)
                return ""
            }
            function median(arr, n,   i, j, t) {
                for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
                return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
            }
            BEGIN {
                while ((getline l < builds) > 0) { split(l, f, "\t"); if (f[2] == c) { bs = f[5]; by = f[6]; st = f[7] } }
            }
            $2 == "dispatch" || $2 == "baseline" { v[$1, $2, $3] = $4 }
            END {
                ncol = split("tp1:gbps tp8:gbps tp1:cpu_s_per_gb tp8:cpu_s_per_gb rate:per_sec rate:p50_ms rate:p99_ms udp:per_sec udp:cpu_s_per_gb", cols, " ")
                line = "| " c
                for (k = 1; k <= ncol; k++) {
                    split(cols[k], tk, ":"); n = 0
                    for (r = 1; r <= 50; r++) {
                        a = val(v[r, "dispatch", tk[1]], tk[2]); b = val(v[r, "baseline", tk[1]], tk[2])
                        if (a != "" && b != "" && b + 0 > 0) x[++n] = a / b
                    }
                    line = line " | " (n ? sprintf("%.3f (n=%d)", median(x, n), n) : "–")
                }
                print line " | " bs " | " by " (" st ") |"
            }' "$d/compare.tsv"
    done
    echo
    awk -F'\t' '$2 == "reference" { print "reference (lto = false, codegen-units = 16, debug = 1): clean build " $5 " s, " $6 " bytes (" $7 " stripped), built " $1 }' "$builds"
    echo "Each run: its commit and date in CANDIDATE/compare.md; summary written $(date -u +%F) on $(nproc) cores of $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), Linux $(uname -r); shared machine (other builds ran beside)."
} >"$here/summary.md"
cat "$here/summary.md"
