#!/usr/bin/env bash
# Watches a running benches/aggregate.sh from outside (root; run it beside
# the benchmark, stop it with Ctrl-C): once a second, what each link carried
# towards home (the far side's tbf qdisc on r1, r2, r3: kB/s including
# headers, packets, and the packets that qdisc dropped), the packets home
# sent on it (l1, l2, l3), and the UDP errors (RcvbufErrors, SndbufErrors)
# in home and among the seeders. A uTP seeder that stalls shows as a link
# near 0 kB/s after a burst of drops.
#
#   benches/aggregate/watch.sh [SECONDS]      (default: until interrupted)
set -euo pipefail
limit=${1:-0}
ns() { ip netns list | awk -v p="$1" '$1 ~ p { print $1; exit }'; }
udp_errors() {
    ip netns exec "$1" awk '$1 == "Udp:" && !h { for (i = 2; i <= NF; i++) c[$i] = i; h = 1; next }
        $1 == "Udp:" { printf "%d/%d", $c["RcvbufErrors"], $c["SndbufErrors"] }' /proc/net/snmp
}
declare -A last_bytes last_pkts last_drops last_up
echo "# time | link: towards home kB/s, packets/s (packets dropped by the far side's tbf since the last line), packets/s from home | UDP Rcvbuf/Sndbuf errors in home and seeds"
n=0
while [ "$limit" = 0 ] || [ "$n" -lt "$limit" ]; do
    n=$((n + 1))
    inet=$(ns '^dagg-inet-')
    home=$(ns '^dagg-home-')
    seeds=$(ns '^dagg-seeds-')
    if [ -z "$inet" ]; then
        sleep 1
        continue
    fi
    line="$(date +%T)"
    # Rates over the time that really passed (a loop takes a little over
    # a second).
    now=$(date +%s%N)
    elapsed_ms=$(((now - ${last_now:-now}) / 1000000))
    last_now=$now
    for i in 1 2 3; do
        # Towards home (r$i in inet: bytes, packets, drops), and from home
        # (l$i in home: packets).
        read -r bytes pkts drops < <(ip netns exec "$inet" tc -s qdisc show dev "r$i" 2>/dev/null |
            awk '/Sent/ { b = $2; p = $4; d = $7; sub(",", "", d) } END { print b + 0, p + 0, d + 0 }')
        read -r _ up _ < <(ip netns exec "$home" tc -s qdisc show dev "l$i" 2>/dev/null |
            awk '/Sent/ { b = $2; p = $4; d = $7; sub(",", "", d) } END { print b + 0, p + 0, d + 0 }')
        key=$inet/$i
        if [ -n "${last_bytes[$key]:-}" ] && [ "$elapsed_ms" -gt 0 ]; then
            line+=$(printf ' | %d: %5d kB/s %4d pkt/s (%d) up %4d pkt/s' "$i" \
                $(((bytes - last_bytes[$key]) / elapsed_ms)) \
                $(((pkts - last_pkts[$key]) * 1000 / elapsed_ms)) \
                $((drops - last_drops[$key])) $(((up - last_up[$key]) * 1000 / elapsed_ms)))
        fi
        last_bytes[$key]=$bytes
        last_pkts[$key]=$pkts
        last_drops[$key]=$drops
        last_up[$key]=$up
    done
    [ -n "$home" ] && line+=" home $(udp_errors "$home" 2>/dev/null || echo -)"
    [ -n "$seeds" ] && line+=" seeds $(udp_errors "$seeds" 2>/dev/null || echo -)"
    echo "$line"
    sleep 1
done
