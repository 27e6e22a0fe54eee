#!/usr/bin/env bash
# Aggregation: how much of the sum of three links' bandwidths a client gets
# through dispatch. Root only (network namespaces); Linux.
#
# Two namespaces, "home" (dispatch and the clients) and "inet" (the servers:
# an HTTP server with Range support on 10.9.0.1; libtorrent seeders on
# 10.8.1.2..10.8.N.2 sit in a third namespace behind inet), joined by three veth links shaped with tbf in both
# directions to 1,200, 1,200 and 400 kB/s (as in the README). home has no
# policy routing, only default routes by metric, and inet drops packets
# whose source does not belong to the link they came in on (strict
# rp_filter), so only device-bound connections use links 2 and 3. inet
# silently drops everything sent to 10.10.0.0/16 (blackhole route): the
# "dead peers" of DEAD=N.
#
# Each run's throughput is reported as a ratio to the 2,800 kB/s sum, then
# a summary line per invocation:
#   mode=M weights=W runs=N median=R min=R max=R [downs=...]
#
# MODE (default ranges):
#   ranges       A file of SIZE bytes (default 12 MB) in RANGES (default 12)
#                static ranges fetched in parallel by curl, one connection
#                each; pieces joined and checked with sha256. The script
#                also prints the best ratio the resulting split allows (12
#                ranges split 5/5/2: link 3 needs 2 MB / 400 kB/s = 5 s, so
#                at most 0.857 of the sum; 14 ranges split 6/6/2 can reach 1).
#   chunks       WORKERS (12) threads pull CHUNK-byte (1 MB) chunks of a
#                SIZE-byte (36 MB) file, a new SOCKS5 connection per chunk,
#                as download managers and browsers do
#                (benches/aggregate/chunks.py); sha256 checked.
#   torrent-tcp  libtorrent: SEEDERS (6) seeders in inet, one downloader in
#   torrent-utp  home using dispatch as its SOCKS5 proxy (uTP: through its
#                UDP ASSOCIATE), only that transport enabled, a SIZE-byte
#                (48 MB) torrent with PIECE-byte (256 KiB) pieces; seeder k
#                on 10.8.k.2 in a third namespace behind inet
#                (benches/aggregate/torrent.py). The ratio is measured from
#                the first payload byte to the last (libtorrent's startup
#                excluded; the time to the first byte and the ratio from
#                add_torrent are printed too, as start= and from_add=).
#                seeders_per_link= counts the seeders that saw the
#                downloader come from each link (uTP has no per-link
#                connection lines in dispatch's log). udp_drops=H/S counts
#                the datagrams the kernel dropped for a full receive
#                buffer during the download, in home (dispatch and the
#                downloader) and among the seeders. per_seeder_mb= is what
#                each live seeder delivered (seeder 1 first; sampled once
#                a second, so up to a second short; seeders sharing a link
#                share it unevenly, so a small figure alone is no stall);
#                seen_after= when each first saw the downloader, in
#                seconds from add_torrent.
#                DEAD=N adds N peers that never answer to the swarm; the
#                run lines count dispatch's "link ... down" log lines and
#                the links' failures from its exit summary. The dead
#                addresses are a sample of 10.10.0.0/16 drawn with the
#                run's number as seed (libtorrent connects first by a hash
#                of the addresses, so the sample decides where the live
#                seeders fall among the dead connects, hence their links):
#                run k of any invocation has the same swarm.
#
# Common settings:
#   RUNS=3             measured runs; the summary gives median, min and max
#   WEIGHTS="l1/3 l2/3 l3/1"  dispatch's targets (the default); "l1 l2 l3"
#                      for no weights, WEIGHTS="" for `dispatch start` with
#                      no address at all
#   BIN=path           the dispatch binary (default: cargo build --release)
#   DISPATCH_ARGS="…"  more `dispatch start` options; @STATE@ in them is
#                      replaced by a state file path kept for one run (fresh
#                      for each run), e.g. DISPATCH_ARGS="--state-file @STATE@"
#   WARMUP=1           before each measured run, one unmeasured run of the
#                      same workload through the same dispatch process
#   RESTART=1          (implies WARMUP=1) stop dispatch after the warm-up and
#                      start it again (same arguments, same state file and
#                      XDG_STATE_HOME) for the measured run
#   DIRECT=1           baseline without dispatch: each range or worker is
#                      bound to a link (curl --interface, SO_BINDTODEVICE)
#                      following the weighted split; torrent-tcp: libtorrent
#                      binds its peer connections to l1, l2 and l3 in turn
#                      (outgoing_interfaces), so DEAD=N shows what dead peers
#                      cost the swarm without dispatch (not torrent-utp)
#   OUT=file           also append the run and summary lines to this file
#   LOGS=dir           keep each run's dispatch log (and libtorrent's) there
#   PEER_LOG=1         torrent modes: libtorrent's per-peer protocol log of
#                      the live seeders' connections, downloader and seeders
#                      (tens of MB a run; with LOGS=dir)
#   TIMEOUT=90         torrent modes: a download's limit in seconds
#   LATE=SECS          torrent modes: seeders 4 to 6 are given to libtorrent
#                      SECS after the others (a control for DEAD=N, among
#                      whose dead connects libtorrent finds them 3 s late)
#
# A fresh dispatch is started for each run, so that every run starts alike
# (the round robin would otherwise carry on where the last run stopped).
#
#   sudo benches/aggregate.sh
#   RUNS=5 RANGES=14 WEIGHTS="l1/3 l2/3 l3/1" sudo -E benches/aggregate.sh
#   MODE=chunks WEIGHTS="l1 l2 l3" sudo -E benches/aggregate.sh
#   MODE=torrent-tcp DEAD=300 sudo -E benches/aggregate.sh
#   MODE=ranges WEIGHTS="l1 l2 l3" RESTART=1 \
#       DISPATCH_ARGS="--state-file @STATE@" sudo -E benches/aggregate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
helpers=$PWD/benches/aggregate

mode=${MODE:-ranges}
runs=${RUNS:-3}
weights=${WEIGHTS-l1/3 l2/3 l3/1}
direct=${DIRECT:-0}
warmup=${WARMUP:-0}
restart=${RESTART:-0}
dead=${DEAD:-0}
dispatch_args=${DISPATCH_ARGS:-}
[ "${PEER_LOG:-0}" = 1 ] && export AGG_PEER_LOG=1
late=${LATE:-}
[ -z "$late" ] || export AGG_LATE=$late
out=${OUT:-}
logs=${LOGS:-}
[ -z "$logs" ] || mkdir -p "$logs"
[ "$restart" = 1 ] && warmup=1
rates=(1200 1200 400) # kB/s (1 kB = 1000 bytes), links 1-3
sum=$((rates[0] + rates[1] + rates[2]))

die() {
    echo "aggregate.sh: $*" >&2
    exit 1
}
case $mode in
ranges)
    size=${SIZE:-12000000}
    ranges=${RANGES:-12}
    ;;
chunks)
    size=${SIZE:-36000000}
    workers=${WORKERS:-12}
    chunk=${CHUNK:-1000000}
    ;;
torrent-tcp | torrent-utp)
    size=${SIZE:-48000000}
    seeders=${SEEDERS:-6}
    piece=${PIECE:-262144}
    timeout=${TIMEOUT:-90}
    transport=${mode#torrent-}
    # libtorrent 2.0 gives its uTP one socket per local address, bound to
    # that address's device, and picks among them itself: no placement by
    # the script is possible, so no baseline.
    [ "$direct" = 1 ] && [ "$transport" != tcp ] && die "DIRECT=1 is not available for $mode"
    [ "$seeders" -ge 1 ] && [ "$seeders" -le 250 ] || die "SEEDERS must be 1..250"
    ;;
*) die "unknown MODE=$mode (ranges, chunks, torrent-tcp, torrent-utp)" ;;
esac
case $mode in torrent-*) ;; *) [ "$dead" = 0 ] || die "DEAD is for the torrent modes" ;; esac
[ "$direct" = 1 ] && [ "$warmup" = 1 ] && die "WARMUP/RESTART need dispatch (not DIRECT=1)"

if [ "$(id -u)" != 0 ]; then
    die "needs root (network namespaces)"
fi
for tool in ip tc curl python3 sha256sum; do
    command -v "$tool" >/dev/null || die "needs $tool"
done
py=python3
if [ "${mode#torrent-}" != "$mode" ]; then
    # Debian's package installs libtorrent for the system Python, which may
    # not be the python3 on the PATH.
    py=
    for p in python3 /usr/bin/python3; do
        if "$p" -c 'import libtorrent' 2>/dev/null; then py=$p && break; fi
    done
    [ -n "$py" ] || die "$mode needs python3-libtorrent"
fi

if [ -z "${BIN:-}" ] && [ "$direct" != 1 ]; then
    cargo build --release --quiet --bin dispatch
    BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/dispatch
fi

home=dagg-home-$$
inet=dagg-inet-$$
seeds=dagg-seeds-$$
tmp=$(mktemp -d)
proxy_pid=
server_pid=
seed_pid=
work_pids=
cleanup() {
    set +e
    for pid in $work_pids $proxy_pid $server_pid $seed_pid; do
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    ip netns del "$home" 2>/dev/null
    ip netns del "$inet" 2>/dev/null
    ip netns del "$seeds" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
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
# Dead peers: the router drops what is sent to them, without an answer.
ip -n "$inet" route add blackhole 10.10.0.0/16

# --- the file and the servers -------------------------------------------------
head -c "$size" /dev/urandom >"$tmp/file"
want=$(sha256sum <"$tmp/file" | cut -d' ' -f1)
url=http://10.9.0.1:8080/file
case $mode in
ranges | chunks)
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
    request_queue_size = 128
S(("10.9.0.1", 8080), H).serve_forever()
EOF
    # Started directly (not through a shell function) so that $! is the server.
    ip netns exec "$inet" python3 "$tmp/server.py" "$tmp/file" </dev/null >/dev/null 2>&1 &
    server_pid=$!
    for _ in $(seq 50); do
        H curl -s -o /dev/null --interface l1 -r 0-0 "$url" && break
        sleep 0.1
    done
    ;;
torrent-*)
    # libtorrent binds each listen socket to the device that has its address,
    # so a seeder's address cannot be on inet's lo (packets come in on rN):
    # the seeders live in a third namespace, "seeds", seeder k on 10.8.k.2
    # on its own unshaped veth sK to inet (10.8.k.1 on qK), with a default
    # route per veth, as home has per link; inet forwards between them.
    ip netns add "$seeds"
    ip -n "$seeds" link set dev lo up
    ip netns exec "$inet" sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
    seed_ips=()
    for k in $(seq "$seeders"); do
        ip -n "$seeds" link add name "s$k" type veth peer name "q$k" netns "$inet"
        ip -n "$seeds" addr add "10.8.$k.2/24" dev "s$k"
        ip -n "$inet" addr add "10.8.$k.1/24" dev "q$k"
        rp_filter "$inet" "q$k" 1
        ip -n "$seeds" link set dev "s$k" up
        ip -n "$inet" link set dev "q$k" up
        ip -n "$seeds" route add default via "10.8.$k.1" dev "s$k" metric "$k"
        seed_ips+=("10.8.$k.2")
    done
    seed_list=$(IFS=, && echo "${seed_ips[*]}")
    ip netns exec "$seeds" "$py" "$helpers/torrent.py" seed "$tmp" "$tmp/file" \
        "$seed_list" "$piece" "$transport" </dev/null >"$tmp/seed.log" 2>"$tmp/seed.err" &
    seed_pid=$!
    for _ in $(seq 300); do
        [ -e "$tmp/seed.ready" ] && break
        kill -0 "$seed_pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -e "$tmp/seed.ready" ] || {
        tail -20 "$tmp/seed.err" >&2
        die "the seeders did not start"
    }
    if [ "$dead" != 0 ]; then
        # A dead peer must time out, not be refused or unreachable.
        rc=0
        H curl -s -o /dev/null --interface l2 --connect-timeout 1 http://10.10.0.1:6881/ || rc=$?
        [ "$rc" = 28 ] || die "a dead peer answered (curl exit $rc, want 28: timeout)"
    fi
    ;;
esac

# --- dispatch -----------------------------------------------------------------
export XDG_STATE_HOME=$tmp/state
state_file=$tmp/dispatch.state
socks=
start_proxy() {
    local args=${dispatch_args//@STATE@/$state_file} before
    touch "$tmp/proxy.log"
    before=$(wc -l <"$tmp/proxy.log")
    # shellcheck disable=SC2086 # DISPATCH_ARGS and WEIGHTS are lists
    ip netns exec "$home" "$BIN" -d start --ip 127.0.0.1 --port 0 $args $weights \
        </dev/null >>"$tmp/proxy.log" 2>&1 &
    proxy_pid=$!
    socks=
    for _ in $(seq 100); do
        socks=$(tail -n +"$((before + 1))" "$tmp/proxy.log" |
            sed -n 's/.*dispatch listening on \([0-9.:]*\).*/\1/p' | head -1)
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

# The weighted split over the links (smooth weighted round robin over the
# WEIGHTS given as lN/W; no address = l1 l2 l3), for DIRECT=1 and for the
# best ratio of ranges.
links=${weights:-l1 l2 l3}
nsplit=${ranges:-${workers:-12}}
# shellcheck disable=SC2086
split=$(python3 - "$nsplit" $links <<'EOF'
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

# Lines of this run's measured part of dispatch's log.
mark=0
measured_log() { tail -n +"$((mark + 1))" "$tmp/proxy.log"; }
# Connections per link in the measured part, from dispatch's per-connection
# debug lines.
via_counts() {
    local out=() log
    log=$(measured_log)
    for i in 1 2 3; do
        out+=("$(grep -c " via 10.$i.0.2:" <<<"$log" || true)")
    done
    (IFS=/ && echo "${out[*]}")
}
# Link transitions to down in the measured part (src/links.rs: "link LABEL
# down: REASON"; the exit summary "link LABEL: down, ..." is not one).
down_count() { measured_log | grep -cE 'link [^:]* down([: ]|$)' || true; }
# Megabytes down per link from dispatch's exit summary (TCP and UDP; the
# whole process: with WARMUP=1 and no RESTART it includes the warm-up).
mb_per_link() {
    local out=()
    for i in 1 2 3; do
        out+=("$(sed -n "s/.*link [^:]*10\.$i\.0\.2: .*, down \([0-9]*\) B$/\1/p" "$tmp/proxy.log" |
            tail -1 | awk '{ printf "%.1f", $1 / 1e6 }')")
    done
    (IFS=/ && echo "${out[*]}")
}
# Failures per link from dispatch's exit summary (the whole process: with
# WARMUP=1 and no RESTART it includes the warm-up).
failures() {
    local out=()
    for i in 1 2 3; do
        out+=("$(sed -n "s/.*link [^:]*10\.$i\.0\.2: .* \([0-9]*\) failures\{0,1\},.*/\1/p" \
            "$tmp/proxy.log" | tail -1)")
    done
    (IFS=/ && echo "${out[*]:-?}")
}

# --- the workloads ----------------------------------------------------------
# Waits for the job just started in the background: a signal's trap runs
# (and cleanup kills the job) without waiting for the job to end.
in_background() {
    work_pids=$!
    wait "$work_pids" || true
    work_pids=
}
# Each sets `secs` (measured time), `bytes` (measured bytes) and `detail`.
work_ranges() {
    local part=$((size / ranges)) pids=() fail=0 t0 t1 k a b route got
    rm -f "$tmp"/part.*
    t0=$(date +%s.%N)
    for k in $(seq 0 $((ranges - 1))); do
        a=$((k * part))
        b=$((k == ranges - 1 ? size - 1 : (k + 1) * part - 1))
        if [ "$direct" = 1 ]; then
            route=(--interface "${assign[$k]}")
        else
            route=(--socks5 "$socks")
        fi
        ip netns exec "$home" curl -sS --fail --max-time 120 "${route[@]}" -r "$a-$b" \
            -o "$tmp/part.$(printf %03d "$k")" "$url" &
        pids+=($!)
    done
    work_pids=${pids[*]}
    for p in "${pids[@]}"; do wait "$p" || fail=1; done
    work_pids=
    t1=$(date +%s.%N)
    if [ "$fail" != 0 ]; then
        echo "a range download failed" >&2
        tail -20 "$tmp/proxy.log" >&2
        exit 1
    fi
    got=$(cat "$tmp"/part.* | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || die "sha256 mismatch ($got, want $want)"
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    bytes=$size
    detail=
}
work_chunks() {
    local route res
    if [ "$direct" = 1 ]; then
        route=direct=$(IFS=, && echo "${assign[*]:0:$workers}")
    else
        route=socks=$socks
    fi
    ip netns exec "$home" python3 "$helpers/chunks.py" 10.9.0.1 8080 /file "$size" "$chunk" "$workers" \
        "$tmp/got" "$route" >"$tmp/res" &
    in_background
    res=$(cat "$tmp/res")
    rm -f "$tmp/got"
    read -r status secs got split <<<"$res"
    [ "$status" = OK ] || {
        tail -20 "$tmp/proxy.log" >&2 2>/dev/null
        die "chunks: $res"
    }
    [ "$got" = "$want" ] || die "sha256 mismatch ($got, want $want)"
    bytes=$size
    detail=${split:+chunks_per_link=$split}
}
# UDP datagrams dropped for a full receive buffer in namespace $1 so far.
udp_drops() {
    ip netns exec "$1" awk '$1 == "Udp:" && !h { for (i = 2; i <= NF; i++) col[$i] = i; h = 1; next }
        $1 == "Udp:" { print $col["RcvbufErrors"] }' /proc/net/snmp
}
work_torrent() {
    local res status total start readds per_seeder seen0 drops0
    seen0=$(wc -l <"$tmp/seed.log")
    drops0="$(udp_drops "$home") $(udp_drops "$seeds")"
    local route=socks=$socks
    [ "$direct" = 1 ] && route=direct=l1,l2,l3
    ip netns exec "$home" "$py" "$helpers/torrent.py" get "$tmp" "$seed_list" "$dead" "$timeout" \
        "$transport" "$want" "$route" "$order" >"$tmp/res" 2>"$tmp/get.log" &
    in_background
    res=$(cat "$tmp/res")
    read -r status bytes secs total start readds per_seeder <<<"$res"
    [ "$status" = OK ] || {
        tail -20 "$tmp/get.log" >&2
        tail -20 "$tmp/proxy.log" >&2
        die "torrent: $res"
    }
    # Seeders per link: the downloader's source address each seeder saw.
    detail="seeders_per_link=$(tail -n +"$((seen0 + 1))" "$tmp/seed.log" | awk '
        $1 == "SEEN" { split($3, a, "."); if (!seen[$2 " " a[2]]++) n[a[2]]++ }
        END { printf "%d/%d/%d", n[1], n[2], n[3] }')"
    # When each seeder (seeder 1 first) first saw the downloader, in
    # seconds from add_torrent: among dead peers libtorrent finds the live
    # ones in batches, seconds apart.
    local added
    added=$(awk '$2 == "add_torrent" { print $1; exit }' "$tmp/get.log")
    [ -n "$added" ] || added=nan
    detail+=" seen_after=$(tail -n +"$((seen0 + 1))" "$tmp/seed.log" | awk -v t0="$added" -v ips="$seed_list" '
        $1 == "SEEN" && !($2 in at) { at[$2] = $4 }
        END {
            n = split(ips, ip, ",")
            for (k = 1; k <= n; k++)
                printf "%s%s", (k > 1 ? "/" : ""), ((ip[k] in at && t0 != "nan") ? sprintf("%.1f", at[ip[k]] - t0) : "-")
        }')"
    detail+=" start=${start}s from_add=$(awk -v b="$size" -v t="$total" -v s="$sum" \
        'BEGIN { printf "%.3f", b / t / 1000 / s }') readds=$readds per_seeder_mb=$per_seeder"
    # Datagrams the kernel dropped for a full socket buffer during the
    # download: in home (dispatch's and the downloader's sockets) and among
    # the seeders. A dropped burst can stall a uTP peer.
    read -r h0 s0 <<<"$drops0"
    detail+=" udp_drops=$(($(udp_drops "$home") - h0))/$(($(udp_drops "$seeds") - s0))"
    fa=$(awk -v b="$size" -v t="$total" -v s="$sum" 'BEGIN { print b / t / 1000 / s }')
}
work() {
    case $mode in
    ranges) work_ranges ;;
    chunks) work_chunks ;;
    torrent-*) work_torrent ;;
    esac
}

# --- the runs -------------------------------------------------------------------
wlabel=${weights:-none}
wlabel=${wlabel// /,}
tags="mode=$mode weights=$wlabel"
[ "$direct" = 1 ] && tags+=" direct=1"
[ "$dead" != 0 ] && tags+=" dead=$dead"
[ "${late:-0}" != 0 ] && tags+=" late=$late"
[ "$restart" = 1 ] && tags+=" restart=1"
[ "$restart" != 1 ] && [ "$warmup" = 1 ] && tags+=" warmup=1"
[ -n "$dispatch_args" ] && tags+=" args=${dispatch_args// /,}"
emit() {
    echo "$*"
    if [ -n "$out" ]; then echo "$*" >>"$out"; fi
}
echo "aggregate: $mode, $size bytes over links of ${rates[0]}+${rates[1]}+${rates[2]} kB/s (sum $sum kB/s)"
if [ "$direct" = 1 ]; then
    echo "DIRECT (bound to the links, no dispatch), split ${assign[*]}"
else
    echo "dispatch $BIN start${dispatch_args:+ $dispatch_args} $weights ($(git describe --always --dirty 2>/dev/null || echo '?'))"
fi
[ -n "$out" ] && echo "# $(date -u +%FT%TZ) $mode $size B, ${BIN:-direct} $dispatch_args, load $(cut -d" " -f1-3 /proc/loadavg)" >>"$out"
ratios=()
from_add=()
downs=()
for run in $(seq "$runs"); do
    if [ "$direct" != 1 ]; then
        rm -f "$state_file" "$tmp/proxy.log"
        rm -rf "$tmp/state"
        start_proxy
        if [ "$warmup" = 1 ]; then
            order=0
            work
            echo "run $run: warm-up $secs s${detail:+, $detail}"
            if [ "$restart" = 1 ]; then
                stop_proxy
                start_proxy
            fi
        fi
        mark=$(wc -l <"$tmp/proxy.log")
    fi
    fa=
    order=$run
    work
    [ -n "$fa" ] && from_add+=("$fa")
    if [ "$direct" = 1 ]; then
        if [ "$mode" = ranges ]; then
            per=$(for i in 1 2 3; do printf '%s\n' "${assign[@]}" | grep -cx "l$i" || true; done | paste -sd/)
        else
            per=
        fi
        extra=
    else
        dn=$(down_count)
        stop_proxy # its per-connection lines are all written now
        per=$(via_counts)
        [ "$mode" = torrent-utp ] && per= # one UDP association, no per-link lines
        downs+=("$dn")
        extra=" mb_per_link=$(mb_per_link) downs=$dn failures=$(failures)"
        [ -z "$logs" ] || cp "$tmp/proxy.log" "$logs/$mode-$$-run$run.dispatch.log"
    fi
    if [ -n "$logs" ]; then
        [ -e "$tmp/get.log" ] && cp "$tmp/get.log" "$logs/$mode-$$-run$run.libtorrent.log"
        [ -e "$tmp/seed.log" ] && cp "$tmp/seed.log" "$logs/$mode-$$-run$run.seeders.log"
        [ -e "$tmp/seed.err" ] && cp "$tmp/seed.err" "$logs/$mode-$$-run$run.seeders.err"
    fi
    ratio=$(awk -v b="$bytes" -v t="$secs" -v s="$sum" 'BEGIN { print b / t / 1000 / s }')
    ratios+=("$ratio")
    if [ "$mode" = ranges ]; then
        best=$(awk -v s="$size" -v per="$per" -v r="${rates[*]}" -v n="$ranges" -v sum="$sum" 'BEGIN {
            split(per, c, "/"); split(r, rate, " "); worst = 0
            for (i = 1; i <= 3; i++) { x = c[i] * (s / n) / 1000 / rate[i]; if (x > worst) worst = x }
            best = worst > 0 ? (s / 1000 / worst) / sum : 0
            printf "%.3f", best }')
        detail="best_for_split=$best"
    fi
    emit "$(awk -v b="$bytes" -v t="$secs" -v r="$ratio" -v tags="$tags" -v run="$run" \
        -v per="$per" -v extra="$extra" -v d="$detail" 'BEGIN {
        printf "%s run=%d secs=%.3f kBps=%.0f ratio=%.3f", tags, run, t, b / t / 1000, r
        if (per != "") printf " conns_per_link=%s", per
        printf "%s%s\n", extra, d != "" ? " " d : "" }')"
done
stats() {
    printf '%s\n' "$@" | sort -g | awk '
        { v[NR] = $1 }
        END {
            med = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "median=%.3f min=%.3f max=%.3f", med, v[1], v[NR]
        }'
}
summary="$tags runs=$runs $(stats "${ratios[@]}")"
[ "${#from_add[@]}" != 0 ] && summary+=" from_add_median=$(stats "${from_add[@]}" | sed 's/median=\([0-9.]*\).*/\1/')"
[ "${#downs[@]}" != 0 ] && summary+=" downs=$(IFS=, && echo "${downs[*]}")"
emit "$summary"
