"""A BitTorrent session that finds its peers through the DHT, all through
one SOCKS5 UDP ASSOCIATE, with libtorrent.

Run by tests/bittorrent.rs inside a network namespace it made (so the
addresses below exist nowhere else):

    python3 bittorrent_dht.py PROXY_HOST PROXY_PORT WORKDIR SIZE TIMEOUT NET NODES SEEDERS CAP LOOKUP_TIMEOUT

NET is a /24 prefix such as 198.51.100: NODES plain DHT nodes listen on
NET.10 and up, SEEDERS seeders on NET.200 and up, each its own session with
the DHT on and no proxy; a seeder joins when the one before has served its
share (1/SEEDERS of the file) and then stops. The downloader, on 127.0.0.1, has the DHT on and
uses the proxy for everything (its DHT, uTP and tracker traffic all go
through the association); TCP peer connections are off on every side, so
pieces can only come over uTP. There is no tracker: the downloader learns
of every seeder from the DHT.

Once the downloader has sent DHT packets to more than CAP distinct
destinations (the proxy's lowered cap), it asks the DHT again, for the
peers of the torrent and for an item a DHT node stored: both must answer,
within LOOKUP_TIMEOUT seconds of the download's end (TIMEOUT is the
download's).

On stdout:
  `SEEN <seeder ip> <peer ip:port> <socket type>` for each connection a
  seeder accepted, `UPLOADED <seeder ip> <bytes>` what the downloader had
  from each seeder (its largest count for one connection),
  `PEER <seeder ip> <ip:port>` each peer address a seeder had, `DESTS <n>` the distinct DHT destinations the downloader
  sent to, `DHT get_peers <n>` and `DHT item ok` for the final questions,
  then `OK <bytes> <sha256> <seconds>`, else `FAIL <reason>` (exit status 1).
"""

import hashlib
import os
import re
import sys
import time

import libtorrent as lt

PIECE = 16 * 1024
SEED_RATE = 400_000
PORT = 6881
T0 = time.monotonic()


def log(msg):
    sys.stderr.write("[%8.3f] %s\n" % (time.monotonic() - T0, msg))
    sys.stderr.flush()


class Fail(Exception):
    pass


def settings(listen, name, extra=None):
    s = {
        "listen_interfaces": listen,
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        # Every node is in one /24 here: turn off the protections against
        # many nodes from one network, which would keep them out.
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False,
        "dht_prefer_verified_node_ids": False,
        "dht_ignore_dark_internet": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_tcp": False,
        "enable_outgoing_tcp": False,
        "enable_incoming_utp": True,
        "enable_outgoing_utp": True,
        "allow_multiple_connections_per_ip": True,
        "user_agent": "dispatch-test-" + name,
        "alert_mask": lt.alert_category.error
        | lt.alert_category.peer
        | lt.alert_category.status
        | lt.alert_category.connect
        | lt.alert_category.dht_operation,
    }
    s.update(extra or {})
    return s


def payload(size):
    data = bytearray()
    block = hashlib.sha256(b"dispatch-dht").digest()
    while len(data) < size:
        block = hashlib.sha256(block).digest()
        data += block * 64
    return bytes(data[:size])


def drain(name, ses, on_alert=None):
    for a in ses.pop_alerts():
        if isinstance(a, lt.incoming_connection_alert):
            ip, port = a.endpoint
            print("SEEN %s %s:%d %s" % (name, ip, port, a.socket_type.name), flush=True)
        if isinstance(a, (lt.dht_pkt_alert, lt.dht_log_alert)):
            pass
        elif not isinstance(a, lt.dht_get_peers_alert):
            log("%s: %s: %s" % (name, type(a).__name__, a.message()))
        if on_alert:
            on_alert(a)


def wait(deadline, what, cond, sessions):
    while not cond():
        if time.monotonic() > deadline:
            raise Fail("timed out waiting for %s" % what)
        time.sleep(0.1)
        for name, ses in sessions:
            drain(name, ses)


def run(proxy_host, proxy_port, work, size, timeout, net, n_nodes, n_seeders, cap, lookup_timeout):
    deadline = time.monotonic() + timeout
    seed_dir = os.path.join(work, "seed")
    down_dir = os.path.join(work, "down")
    os.makedirs(seed_dir, exist_ok=True)
    os.makedirs(down_dir, exist_ok=True)
    data = payload(size)
    want = hashlib.sha256(data).hexdigest()
    with open(os.path.join(seed_dir, "payload.bin"), "wb") as f:
        f.write(data)
    fs = lt.file_storage()
    lt.add_files(fs, os.path.join(seed_dir, "payload.bin"))
    ct = lt.create_torrent(fs, PIECE)
    lt.set_piece_hashes(ct, seed_dir)
    info = lt.torrent_info(lt.bencode(ct.generate()))

    # The DHT: plain nodes, each told of the first and of the one before.
    node_ips = ["%s.%d" % (net, 10 + i) for i in range(n_nodes)]
    nodes = [lt.session(settings("%s:%d" % ip_port, "node")) for ip_port in ((ip, PORT) for ip in node_ips)]
    for i, ses in enumerate(nodes):
        for j in {0, i - 1}:
            if 0 <= j != i:
                ses.add_dht_node((node_ips[j], PORT))
    named = [("node%d" % i, s) for i, s in enumerate(nodes)]

    def table_sizes():
        for s in nodes:
            s.post_dht_stats()
        time.sleep(0.2)
        sizes = []
        for s in nodes:
            for a in s.pop_alerts():
                if isinstance(a, lt.dht_stats_alert):
                    sizes.append(sum(b["num_nodes"] for b in a.routing_table))
        return sizes

    while True:
        sizes = table_sizes()
        if len(sizes) == n_nodes and min(sizes) >= 2:
            break
        if time.monotonic() > deadline:
            raise Fail("the DHT nodes never knew each other: %s" % sizes)
    log("DHT nodes ready: routing tables %s" % sizes)

    # An item stored in the DHT by a node, for the downloader to fetch last.
    item = "dispatch dht item"
    target = nodes[-1].dht_put_immutable_item(item)
    log("DHT item %s put" % target)

    down_settings = settings(
        "127.0.0.1:0",
        "downloader",
        {
            "proxy_type": lt.proxy_type_t.socks5,
            "proxy_hostname": proxy_host,
            "proxy_port": proxy_port,
            "proxy_peer_connections": True,
            "proxy_tracker_connections": True,
            "proxy_hostnames": True,
            "alert_mask": lt.alert_category.error
            | lt.alert_category.status
            | lt.alert_category.peer
            | lt.alert_category.connect
            | lt.alert_category.dht
            | lt.alert_category.dht_operation
            | lt.alert_category.dht_log,
        },
    )
    down = lt.session(down_settings)
    dests = set()
    answers = {"peers": None, "item": None}
    pkt = re.compile(r"==> \[([0-9.]+:[0-9]+)\]")

    def on_down(a):
        if isinstance(a, lt.dht_pkt_alert):
            m = pkt.search(a.message())
            if m:
                dests.add(m.group(1))
        elif isinstance(a, lt.dht_get_peers_reply_alert):
            answers["peers"] = len(a.peers())
        elif isinstance(a, lt.dht_immutable_item_alert):
            try:
                v = a.item
            except RuntimeError:
                # Not found this time (the entry is undefined): the item
                # is asked for again.
                return
            v = v.get("value", v) if isinstance(v, dict) else v
            answers["item"] = v.decode() if isinstance(v, bytes) else str(v)

    # The seeders join one after another while the download runs, each
    # once the downloader has its share from the one before, which then
    # stops (pauses its torrent): the file arrives whole only if the
    # downloader finds each newcomer through the DHT. Each announces itself
    # in the DHT, and the downloader asks it again often.
    seeders = []
    peers_seen = set()  # (seeder, the address a peer of it had)
    got_from = {}  # peer ip -> most bytes the downloader had from it
    h = down.add_torrent({"ti": info, "save_path": down_dir})
    last_ask = last_report = 0.0
    while True:
        now = time.monotonic()
        share = size * len(seeders) // n_seeders
        if len(seeders) < n_seeders and h.status().total_wanted_done >= share:
            if seeders:
                seeders[-1][2].pause()
                log("seeder %s stopped" % seeders[-1][0])
            ip = "%s.%d" % (net, 200 + len(seeders))
            extra = {"upload_rate_limit": SEED_RATE, "ignore_limits_on_local_network": False}
            ses = lt.session(settings("%s:%d" % (ip, PORT), "seeder", extra))
            for nip in node_ips[len(seeders) :: 7]:
                ses.add_dht_node((nip, PORT))
            sh = ses.add_torrent({"ti": info, "save_path": seed_dir})
            seeders.append((ip, ses, sh))
            named.append((ip, ses))
            log("seeder %s joined" % ip)
        for ip, _, sh in seeders:
            if sh.status().is_seeding and now - last_ask > 2.0:
                sh.force_dht_announce()
            for p in sh.get_peer_info():
                peers_seen.add((ip, "%s:%d" % p.ip))
        for p in h.get_peer_info():
            ip = p.ip[0]
            got_from[ip] = max(got_from.get(ip, 0), p.total_download)
        st = h.status()
        if st.is_seeding:
            break
        if now > deadline:
            raise Fail(
                "timed out: %d of %d bytes, %d peers, %d seeders, %d DHT destinations"
                % (st.total_wanted_done, size, st.num_peers, len(seeders), len(dests))
            )
        if now - last_ask > 2.0:
            # Datagrams sent before the proxy's UDP tunnel is up are lost,
            # and the DHT does not retry its first nodes by itself soon.
            if len(dests) < 6:
                for ip in node_ips[:3]:
                    down.add_dht_node((ip, PORT))
            h.force_dht_announce()
            last_ask = now
        if now - last_report > 1.0:
            log(
                "downloader: %s, %d/%d bytes, %d peers, %d DHT destinations"
                % (st.state, st.total_wanted_done, size, st.num_peers, len(dests))
            )
            last_report = now
        down.wait_for_alert(100)
        drain("downloader", down, on_down)
        for name, ses in named:
            drain(name, ses)
    secs = time.monotonic() - T0
    with open(os.path.join(down_dir, "payload.bin"), "rb") as f:
        got = hashlib.sha256(f.read()).hexdigest()
    if got != want:
        raise Fail("hash mismatch: got %s, want %s" % (got, want))

    # Past the proxy's cap, the DHT still answers: more lookups until the
    # downloader has used more destinations than the cap, then the peers of
    # the torrent and the item. A guard of its own: a slow download does
    # not eat the time these lookups take.
    deadline = time.monotonic() + lookup_timeout
    while len(dests) <= cap:
        if time.monotonic() > deadline:
            raise Fail("only %d DHT destinations used, not more than %d" % (len(dests), cap))
        down.dht_get_peers(lt.sha1_hash(os.urandom(20)))
        down.wait_for_alert(500)
        drain("downloader", down, on_down)
    print("DESTS %d" % len(dests), flush=True)
    answers["peers"] = None
    down.dht_get_peers(info.info_hash())
    down.dht_get_immutable_item(target)
    while answers["peers"] is None or answers["item"] is None:
        if time.monotonic() > deadline:
            raise Fail("the DHT stopped answering: %s" % answers)
        down.wait_for_alert(100)
        drain("downloader", down, on_down)
        for name, ses in named:
            drain(name, ses)
    print("DHT get_peers %d" % answers["peers"], flush=True)
    if answers["item"] != item:
        raise Fail("DHT item %r, not %r" % (answers["item"], item))
    print("DHT item ok", flush=True)
    for name, ses in named:
        drain(name, ses)
    for ip, _, _ in seeders:
        print("UPLOADED %s %d" % (ip, got_from.get(ip, 0)), flush=True)
    for ip in sorted(peers_seen):
        print("PEER %s %s" % ip, flush=True)
    print("OK %d %s %.3f" % (size, got, secs), flush=True)


def main():
    a = sys.argv[1:11]
    try:
        run(a[0], int(a[1]), a[2], int(a[3]), float(a[4]), a[5], int(a[6]), int(a[7]), int(a[8]), float(a[9]))
    except Fail as e:
        print("FAIL %s" % e, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
