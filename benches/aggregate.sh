#!/usr/bin/env bash
# Aggregation: how much of the sum of three links' bandwidths a download
# manager gets through dispatch. Root only (network namespaces); Linux.
#
# Two namespaces, "home" (dispatch and curl) and "inet" (an HTTP server with
# Range support on 10.9.0.1), joined by three veth links shaped with tbf in
# both directions to 1,200, 1,200 and 400 kB/s (as in the README). home has
# no policy routing, only default routes by metric, and inet drops packets
# whose source does not belong to the link they came in on (strict
# rp_filter), so only device-bound connections use links 2 and 3.
#
# A file of SIZE bytes is fetched through dispatch by RANGES parallel curl
# range requests, the pieces are joined and checked with sha256, and the
# throughput is reported as a ratio to the 2,800 kB/s sum: each run, then
# the median, min and max of RUNS runs.
#
#   sudo benches/aggregate.sh
#   RUNS=5 RANGES=14 WEIGHTS="l1/3 l2/3 l3/1" sudo -E benches/aggregate.sh
#
# WEIGHTS are dispatch's targets (default l1/3 l2/3 l3/1, proportional to
# the rates). With RANGES equal ranges, a link's share of the bytes is its
# share of the ranges, so the script also prints the best ratio that split
# allows (12 ranges split 5/5/2: link 3 needs 2 MB / 400 kB/s = 5 s, so at
# most 2,400 kB/s = 0.857 of the sum; 14 ranges split 6/6/2 can reach 1).
# DIRECT=1 fetches each range with `curl --interface lN` instead, following
# the same weighted split, as a baseline for the harness without dispatch.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${RUNS:-3}
ranges=${RANGES:-12}
size=${SIZE:-12000000}
weights=${WEIGHTS:-l1/3 l2/3 l3/1}
direct=${DIRECT:-0}
rates=(1200 1200 400) # kB/s (1 kB = 1000 bytes), links 1-3
sum=$((rates[0] + rates[1] + rates[2]))

if [ "$(id -u)" != 0 ]; then
    echo "aggregate.sh needs root (network namespaces)" >&2
    exit 1
fi
for tool in ip tc curl python3 sha256sum; do
    command -v "$tool" >/dev/null || {
        echo "aggregate.sh needs $tool" >&2
        exit 1
    }
done

if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet --bin dispatch
    BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/dispatch
fi

home=dagg-home-$$
inet=dagg-inet-$$
tmp=$(mktemp -d)
proxy_pid=
server_pid=
cleanup() {
    set +e
    for pid in $proxy_pid $server_pid; do
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    ip netns del "$home" 2>/dev/null
    ip netns del "$inet" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
for v in http_proxy https_proxy all_proxy no_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY NO_PROXY; do
    unset "$v"
done

# --- topology ---------------------------------------------------------------
ip netns add "$home"
ip netns add "$inet"
H() { ip netns exec "$home" "$@"; }
I() { ip netns exec "$inet" "$@"; }
# sysctl without the sysctl binary: /proc/sys/net shows the caller's namespace.
rp_filter() { ip netns exec "$1" sh -c "echo $3 >/proc/sys/net/ipv4/conf/$2/rp_filter"; }
rp_filter "$home" all 2
rp_filter "$home" default 2
rp_filter "$inet" all 1
rp_filter "$inet" default 1
ip -n "$home" link set dev lo up
ip -n "$inet" link set dev lo up
ip -n "$inet" addr add 10.9.0.1/32 dev lo
for i in 1 2 3; do
    ip -n "$home" link add name "l$i" type veth peer name "r$i" netns "$inet"
    ip -n "$home" addr add "10.$i.0.2/24" dev "l$i"
    ip -n "$inet" addr add "10.$i.0.1/24" dev "r$i"
    rp_filter "$inet" "r$i" 1
    ip -n "$home" link set dev "l$i" up
    ip -n "$inet" link set dev "r$i" up
    ip -n "$home" route add default via "10.$i.0.1" dev "l$i" metric "$((i * 100))"
    rate=${rates[$((i - 1))]}kbps
    H tc qdisc add dev "l$i" root tbf rate "$rate" burst 32kb latency 100ms
    I tc qdisc add dev "r$i" root tbf rate "$rate" burst 32kb latency 100ms
done

# --- the file and the range server ------------------------------------------
head -c "$size" /dev/urandom >"$tmp/file"
want=$(sha256sum <"$tmp/file" | cut -d' ' -f1)
cat >"$tmp/server.py" <<'EOF'
import http.server, sys
data = open(sys.argv[1], "rb").read()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        n = len(data)
        r = self.headers.get("Range")
        if r and r.startswith("bytes="):
            a, b = r[6:].split("-", 1)
            a, b = int(a), min(int(b) if b else n - 1, n - 1)
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (a, b, n))
        else:
            a, b = 0, n - 1
            self.send_response(200)
        self.send_header("Content-Length", str(b - a + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(memoryview(data)[a:b + 1])
    def log_message(self, *args):
        pass
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
S(("10.9.0.1", 8080), H).serve_forever()
EOF
# Started directly (not through a shell function) so that $! is the server.
ip netns exec "$inet" python3 "$tmp/server.py" "$tmp/file" </dev/null >/dev/null 2>&1 &
server_pid=$!
url=http://10.9.0.1:8080/file
for _ in $(seq 50); do
    H curl -s -o /dev/null --interface l1 -r 0-0 "$url" && break
    sleep 0.1
done

# --- dispatch -----------------------------------------------------------------
# A fresh dispatch for each run, so that every run splits the ranges the same
# way (the round robin would otherwise carry on where the last run stopped).
export XDG_STATE_HOME=$tmp/state
socks=
start_proxy() {
    # shellcheck disable=SC2086 # WEIGHTS is a list of targets
    ip netns exec "$home" "$BIN" -d start --ip 127.0.0.1 --port 0 $weights \
        </dev/null >"$tmp/proxy.log" 2>&1 &
    proxy_pid=$!
    socks=
    for _ in $(seq 100); do
        socks=$(sed -n 's/.*dispatch listening on \([0-9.:]*\).*/\1/p' "$tmp/proxy.log" | head -1)
        [ -n "$socks" ] && return
        sleep 0.05
    done
    echo "dispatch did not start:" >&2
    cat "$tmp/proxy.log" >&2
    exit 1
}
stop_proxy() {
    kill -TERM "$proxy_pid"
    wait "$proxy_pid" || {
        echo "dispatch did not exit cleanly:" >&2
        tail -20 "$tmp/proxy.log" >&2
        exit 1
    }
    proxy_pid=
}

# The weighted split of the ranges over the links (smooth weighted round
# robin over the WEIGHTS given as lN/W), for DIRECT=1 and for the best ratio.
split=$(python3 - "$ranges" $weights <<'EOF'
import sys
n = int(sys.argv[1])
ws = []
for t in sys.argv[2:]:
    name, _, w = t.partition("/")
    ws.append([name, int(w or 1), 0])
total = sum(w for _, w, _ in ws)
seq = []
for _ in range(n):
    for x in ws:
        x[2] += x[1]
    best = max(ws, key=lambda x: x[2])
    best[2] -= total
    seq.append(best[0])
print(" ".join(seq))
EOF
)
read -r -a assign <<<"$split"

# Connections per link in this run, from dispatch's per-connection debug lines.
via_counts() {
    local out=()
    for i in 1 2 3; do
        out+=("$(grep -c " via 10.$i.0.2:" "$tmp/proxy.log" || true)")
    done
    (IFS=/ && echo "${out[*]}")
}

part=$((size / ranges))
echo "aggregate: $size bytes in $ranges ranges over links of ${rates[0]}+${rates[1]}+${rates[2]} kB/s (sum $sum kB/s)"
if [ "$direct" = 1 ]; then
    echo "mode: DIRECT (curl --interface, no dispatch), split ${assign[*]}"
else
    echo "mode: dispatch $(basename "$BIN") start $weights ($(git describe --always --dirty 2>/dev/null || echo '?'))"
fi
ratios=()
for run in $(seq "$runs"); do
    rm -f "$tmp"/part.*
    [ "$direct" = 1 ] || start_proxy
    pids=()
    t0=$(date +%s.%N)
    for k in $(seq 0 $((ranges - 1))); do
        a=$((k * part))
        b=$((k == ranges - 1 ? size - 1 : (k + 1) * part - 1))
        if [ "$direct" = 1 ]; then
            route=(--interface "${assign[$k]}")
        else
            route=(--socks5 "$socks")
        fi
        H curl -sS --fail --max-time 120 "${route[@]}" -r "$a-$b" \
            -o "$tmp/part.$(printf %03d "$k")" "$url" &
        pids+=($!)
    done
    fail=0
    for p in "${pids[@]}"; do wait "$p" || fail=1; done
    t1=$(date +%s.%N)
    if [ "$fail" != 0 ]; then
        echo "run $run: a range download failed" >&2
        tail -20 "$tmp/proxy.log" >&2
        exit 1
    fi
    got=$(cat "$tmp"/part.* | sha256sum | cut -d' ' -f1)
    if [ "$got" != "$want" ]; then
        echo "run $run: sha256 mismatch ($got, want $want)" >&2
        exit 1
    fi
    if [ "$direct" = 1 ]; then
        per=$(for i in 1 2 3; do printf '%s\n' "${assign[@]}" | grep -cx "l$i" || true; done | paste -sd/)
    else
        stop_proxy # its per-connection lines are all written now
        per=$(via_counts)
    fi
    line=$(awk -v s="$size" -v t0="$t0" -v t1="$t1" -v sum="$sum" -v per="$per" \
        -v r="${rates[*]}" -v n="$ranges" 'BEGIN {
        secs = t1 - t0; kbs = s / secs / 1000
        split(per, c, "/"); split(r, rate, " ")
        worst = 0
        for (i = 1; i <= 3; i++) { x = c[i] * (s / n) / 1000 / rate[i]; if (x > worst) worst = x }
        best = worst > 0 ? (s / 1000 / worst) / sum : 0
        printf "%.3f s, %.0f kB/s, ratio %.3f (ranges per link %s; best for that split %.3f)", secs, kbs, kbs / sum, per, best
        print ""; print kbs / sum > "/dev/stderr" }' 2>"$tmp/ratio")
    echo "run $run: $line, sha256 ok"
    ratios+=("$(cat "$tmp/ratio")")
done
printf '%s\n' "${ratios[@]}" | sort -g | awk -v sum="$sum" '
    { v[NR] = $1 }
    END {
        med = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "ratio to the %d kB/s sum: median %.3f (%.0f kB/s), min %.3f, max %.3f, %d runs\n",
            sum, med, med * sum, v[1], v[NR], NR
    }'
