#!/usr/bin/env bash
# For runs kept with PEER_LOG=1 LOGS=dir (benches/aggregate.sh, torrent
# modes): per live seeder, the 16 KiB blocks it sent (its "==> PIECE"
# lines), the blocks the downloader received from it ("<== PIECE"), and the
# messages the seeder received from the downloader ("<== HAVE" and "<==
# REQUEST"). A uTP stall shows as blocks sent that never arrive while the
# downloader's messages still do.
#
#   benches/aggregate/pieces.sh DIR
set -euo pipefail
dir=${1:?usage: pieces.sh DIR}
for down in "$dir"/*.libtorrent.log; do
    run=${down%.libtorrent.log}
    seeders=$run.seeders.err
    [ -e "$seeders" ] || continue
    echo "# $(basename "$run")"
    echo "# seeder: blocks sent, blocks received by the downloader, HAVE and REQUEST it received"
    for k in 1 2 3 4 5 6 7 8 9; do
        ip=10.8.$k.2
        grep -q "^[0-9.]* $ip: " "$seeders" || continue
        sent=$(grep -c "^[0-9.]* $ip: peer_log_alert: .* ==> PIECE " "$seeders" || true)
        got=$(grep -c "peer \[ $ip:[0-9]* .*<== PIECE " "$down" || true)
        have=$(grep -c "^[0-9.]* $ip: peer_log_alert: .* <== HAVE " "$seeders" || true)
        req=$(grep -c "^[0-9.]* $ip: peer_log_alert: .* <== REQUEST " "$seeders" || true)
        echo "$ip: sent $sent, received $got, HAVE $have, REQUEST $req"
    done
done
