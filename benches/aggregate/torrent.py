"""The BitTorrent workloads of benches/aggregate.sh (MODE=torrent-tcp and
MODE=torrent-utp), with libtorrent (Debian package python3-libtorrent).

Seeders, run in the "inet" namespace, until SIGTERM:

    python3 torrent.py seed WORK FILE IP,IP,... PIECE tcp|utp

  One session per IP listens on IP port 6881 and seeds FILE (seed mode: no
  hash check at start), and prints `SEEN <seeder ip> <peer ip:port> <time>`
  for each connection it accepts (time.monotonic(), as the downloader's log
  lines). libtorrent binds its listen sockets to the device that has the
  address, so each IP must be on the interface its peers' packets come in
  on (not on lo). The torrent is written to
  WORK/t.torrent, then WORK/seed.ready. Only the given transport is on.

The downloader, run in the "home" namespace:

    python3 torrent.py get WORK IP,IP,... DEAD TIMEOUT tcp|utp SHA256 ROUTE ORDER

  One session with DHT, LSD, UPnP and NAT-PMP off and only the given
  transport on. ROUTE socks=IP:PORT: through the SOCKS5 proxy for peer
  connections (uTP through its UDP ASSOCIATE); direct=IFACE,...: TCP peer
  connections bound to those interfaces in turn, without a proxy. It is
  given the live seeders (IP:6881) and DEAD peers that never answer
  (10.10.x.y:6881, which the benchmark's router drops silently, a sample
  of 10.10.0.0/16 drawn with the random seed ORDER) with connect_peer, in
  one list shuffled with ORDER, as a tracker would hand them out. Where a
  live seeder falls among the dead peers decides which link a
  per-connection balancer gives it, so aggregate.sh uses a different ORDER
  for each run (the run's number): the median is over several placements,
  and the same across invocations. A live seeder that is not connected is
  given again every 5 s (without a tracker or the DHT, libtorrent does not
  retry a failed connect by itself soon).

  Prints `OK <bytes> <secs> <total secs> <first byte secs> <re-adds> <MB/...>`:
  <bytes> and <secs> measure from the first payload byte to the last
  (startup excluded), <total secs> from add_torrent, <first byte secs> is
  the time to the first payload byte, then the payload MB each live seeder
  delivered, in the order given (sampled once a second, so up to a
  second's bytes short); or `FAIL <reason>` (exit status 1).
"""

import hashlib
import os
import random
import re
import shutil
import signal
import sys
import time

import libtorrent as lt

PORT = 6881
POLL = 0.05
# AGG_PEER_LOG=1 (aggregate.sh PEER_LOG=1): libtorrent's per-peer protocol
# log, for the live seeders' connections only (their addresses and the
# links'), on both ends: what each end sent and received.
PEER_LOG = os.environ.get("AGG_PEER_LOG") == "1"
# AGG_LATE=SECS (aggregate.sh LATE=SECS): the second half of the live
# seeders (4 to 6) is given SECS after add_torrent, the others at once: the
# late discovery a swarm of dead peers causes (libtorrent finds seeders 4 to 6
# there a uTP connect timeout, 3 s, after the others), without dead peers.
LATE = float(os.environ.get("AGG_LATE") or 0)
LIVE = re.compile(r"\b10\.[1238]\.\d+\.2\b")


def log(msg):
    sys.stderr.write("%.3f %s\n" % (time.monotonic(), msg))
    sys.stderr.flush()


def base_settings(listen, transport, name):
    tcp = transport == "tcp"
    return {
        "listen_interfaces": listen,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_tcp": tcp,
        "enable_outgoing_tcp": tcp,
        "enable_incoming_utp": not tcp,
        "enable_outgoing_utp": not tcp,
        "allow_multiple_connections_per_ip": True,
        "user_agent": "dispatch-bench-" + name,
        "alert_mask": lt.alert_category.error,
    }


def drain(name, ses):
    for a in ses.pop_alerts():
        if isinstance(a, lt.incoming_connection_alert):
            # Which link the downloader came through: its source address.
            ip, port = a.endpoint
            print("SEEN %s %s:%d %.3f" % (name, ip, port, time.monotonic()), flush=True)
            continue
        if isinstance(a, lt.peer_log_alert) and not LIVE.search(a.message()):
            continue
        log("%s: %s: %s" % (name, type(a).__name__, a.message()))


def seed(work, path, ips, piece, transport):
    fs = lt.file_storage()
    lt.add_files(fs, path)
    ct = lt.create_torrent(fs, piece)
    lt.set_piece_hashes(ct, os.path.dirname(path))
    raw = lt.bencode(ct.generate())
    with open(os.path.join(work, "t.torrent.tmp"), "wb") as f:
        f.write(raw)
    os.rename(os.path.join(work, "t.torrent.tmp"), os.path.join(work, "t.torrent"))
    info = lt.torrent_info(raw)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    sessions = []
    for ip in ips:
        settings = base_settings("%s:%d" % (ip, PORT), transport, "seeder")
        settings["alert_mask"] |= lt.alert_category.connect | lt.alert_category.peer
        if PEER_LOG:
            settings["alert_mask"] |= lt.alert_category.peer_log
        ses = lt.session(settings)
        p = lt.add_torrent_params()
        p.ti = info
        p.save_path = os.path.dirname(path)
        p.flags |= lt.torrent_flags.seed_mode
        ses.add_torrent(p)
        sessions.append((ip, ses))
    deadline = time.monotonic() + 30
    for ip, ses in sessions:
        h = ses.get_torrents()[0]
        while not h.status().is_seeding:
            if time.monotonic() > deadline:
                raise SystemExit("seeder %s not seeding" % ip)
            time.sleep(POLL)
            drain(ip, ses)
    open(os.path.join(work, "seed.ready"), "w").close()
    log("seeders ready")
    while not stop:
        time.sleep(0.2)
        for ip, ses in sessions:
            drain(ip, ses)
    for ip, ses in sessions:
        st = ses.get_torrents()[0].status()
        log("seeder %s uploaded %d B" % (ip, st.total_payload_upload))


def dead_peers(n, order):
    """n addresses of 10.10.0.0/16, a different sample for each order:
    libtorrent picks whom to connect first by a hash of the addresses (not
    by the order given), so the sample decides where the live seeders fall
    among the dead connects."""
    picks = random.Random(order).sample(range(250 * 250), n)
    return [("10.10.%d.%d" % (k // 250, k % 250 + 1), PORT) for k in picks]


def get(work, ips, n_dead, timeout, transport, want, route, order):
    live = [(ip, PORT) for ip in ips]
    peers = live + dead_peers(n_dead, order)
    random.Random(order).shuffle(peers)
    # Not 127.0.0.1: libtorrent 2.0 only uses a listen socket that can
    # route to a peer (loopback reaches loopback only), proxy or not.
    settings = base_settings("0.0.0.0:0", transport, "downloader")
    kind, _, arg = route.partition("=")
    if kind == "direct":
        # Without a proxy: libtorrent binds its outgoing peer connections
        # to these interfaces in turn (bind-to-device), as round robin
        # over the links would. The baseline of what the swarm allows.
        if transport != "tcp":
            raise SystemExit("direct=IFACES is for TCP peers only")
        settings["outgoing_interfaces"] = arg
        return download(work, settings, peers, live, timeout, want)
    if kind != "socks":
        raise SystemExit("route must be socks=IP:PORT or direct=IFACE,...")
    host, _, port = arg.rpartition(":")
    settings.update({
        "proxy_type": lt.proxy_type_t.socks5,
        "proxy_hostname": host,
        "proxy_port": int(port),
        "proxy_peer_connections": True,
        "proxy_tracker_connections": True,
        "proxy_hostnames": True,
        # The one UDP socket all uTP peers share (through dispatch's
        # relay) gets a large receive buffer: the default 208 KiB holds
        # ~75 ms of the 2,800 kB/s sum, so a downloader descheduled longer
        # (a loaded machine) drops a burst of datagrams, and libtorrent's
        # uTP can then stall that peer until the download ends (the
        # seeder's retransmit timer restarts on every packet we send it,
        # and our HAVE messages keep coming). 4 MiB asked; the kernel
        # doubles it, within net.core.rmem_max.
        "recv_socket_buffer_size": 4 * 1024 * 1024,
    })
    return download(work, settings, peers, live, timeout, want)


def seeders_got(h, live_ips, got):
    """Updates got[ip] = [banked, last]: what the connections to each live
    seeder have delivered. A total lower than the last seen is a new
    connection (a reconnect): the last one's bytes are banked."""
    now = {}
    for p in h.get_peer_info():
        if p.ip[0] in live_ips:
            now[p.ip[0]] = now.get(p.ip[0], 0) + p.total_download
    for ip, n in now.items():
        seen = got.setdefault(ip, [0, 0])
        if n < seen[1]:
            seen[0] += seen[1]
        seen[1] = n


def seeders_state(h, live):
    """Logs what the downloader thinks of each live seeder: a stalled uTP
    seeder shows whether requests wait on it (queue) and who chokes."""
    for p in h.get_peer_info():
        if p.ip[0] not in live:
            continue
        flags = [n for n in ("interesting", "remote_choked", "snubbed", "endgame_mode")
                 if p.flags & getattr(lt.peer_info, n)]
        log("seeder %s: %d B, %.0f kB/s, queue %d, last request %s, rtt %d ms, %s" % (
            p.ip[0], p.total_download, p.payload_down_speed / 1000, p.download_queue_length,
            p.last_request, p.rtt, ",".join(flags) or "-"))


def download(work, settings, peers, live, timeout, want):
    down = os.path.join(work, "down.%d" % os.getpid())
    shutil.rmtree(down, ignore_errors=True)
    os.makedirs(down)
    try:
        if PEER_LOG:
            settings["alert_mask"] = settings.get("alert_mask", 0) | lt.alert_category.peer_log
        ses = lt.session(settings)
        info = lt.torrent_info(os.path.join(work, "t.torrent"))
        size = info.total_size()
        t_add = time.monotonic()
        h = ses.add_torrent({"ti": info, "save_path": down})
        log("add_torrent")
        late = set(live[len(live) // 2:]) if LATE > 0 else set()
        for p in peers:
            if p not in late:
                h.connect_peer(p)
        last_add = t_add
        readds = 0
        t_first = None
        done_first = 0
        last_log = t_add
        # Payload bytes each live seeder delivered (sampled once a second:
        # a connection leaves the list when it closes, so up to a second's
        # bytes are missed).
        live_ips = {ip for ip, _ in live}
        got = {}
        while True:
            now = time.monotonic()
            st = h.status()
            if t_first is None and st.total_payload_download > 0:
                t_first, done_first = now, st.total_wanted_done
            if st.is_seeding:
                break
            if now - t_add > timeout:
                print("FAIL timed out after %.0f s: %d of %d bytes, %d peers"
                      % (timeout, st.total_wanted_done, size, st.num_peers), flush=True)
                return 1
            if late and now - t_add >= LATE:
                for p in late:
                    h.connect_peer(p)
                log("late seeders given")
                late = set()
            if now - last_add > 5:
                connected = {p.ip[0] for p in h.get_peer_info()}
                for p in live:
                    if p[0] not in connected and p not in late:
                        h.connect_peer(p)
                        readds += 1
                last_add = now
                seeders_state(h, live_ips)
            if now - last_log > 1:
                seeders_got(h, live_ips, got)
                log("%d/%d B, %d peers, %.0f kB/s" % (
                    st.total_wanted_done, size, st.num_peers, st.download_payload_rate / 1000))
                last_log = now
            drain("downloader", ses)
            time.sleep(POLL)
        t_done = time.monotonic()
        seeders_got(h, live_ips, got)
        h2 = hashlib.sha256()
        with open(os.path.join(down, info.files().file_path(0)), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h2.update(block)
        if h2.hexdigest() != want:
            print("FAIL sha256 mismatch: %s, want %s" % (h2.hexdigest(), want), flush=True)
            return 1
        per_seeder = "/".join("%.1f" % (sum(got.get(ip, [0, 0])) / 1e6) for ip, _ in live)
        print("OK %d %.3f %.3f %.3f %d %s" % (
            size - done_first, t_done - t_first, t_done - t_add, t_first - t_add, readds,
            per_seeder), flush=True)
        del ses
        return 0
    finally:
        shutil.rmtree(down, ignore_errors=True)


def main():
    role = sys.argv[1]
    if role == "seed":
        work, path, ips, piece, transport = sys.argv[2:7]
        seed(work, path, ips.split(","), int(piece), transport)
        return 0
    if role == "get":
        work, ips, dead, timeout, transport, want, route, order = sys.argv[2:10]
        return get(work, ips.split(","), int(dead), float(timeout), transport, want, route,
                   int(order))
    raise SystemExit("seed or get")


if __name__ == "__main__":
    sys.exit(main())
