"""A real BitTorrent transfer over uTP through a SOCKS5 proxy, with libtorrent.

Run by tests/bittorrent.rs (Debian package python3-libtorrent):

    python3 bittorrent_utp.py PROXY_HOST PROXY_PORT WORKDIR SIZE TIMEOUT SEND_LOCAL_EP

Two seeder sessions listen on 127.0.0.5 and 127.0.0.6 without a proxy. A
downloader session uses the proxy as SOCKS5 for peer connections, with TCP
peer connections disabled both ways and uTP only, so its peer traffic can
only go through UDP ASSOCIATE. DHT, LSD, UPnP and NAT-PMP are off; the
seeders are added by hand with connect_peer. SEND_LOCAL_EP (0 or 1) is
libtorrent's socks5_udp_send_local_ep: whether the UDP ASSOCIATE request
announces the downloader's UDP endpoint. Only loopback addresses are used.

libtorrent's alerts and progress go to stderr. On stdout:
  `SEEN <seeder ip> <peer ip:port> <socket type>` for each connection a seeder
  accepted (the address the downloader's traffic came from), then
  `OK <bytes> <sha256> <seconds>` when the downloaded file hashes like the
  seeded one, else `FAIL <reason>` (and exit status 1).
"""

import hashlib
import os
import sys
import time

import libtorrent as lt

SEEDERS = ["127.0.0.5", "127.0.0.6"]
PIECE = 16 * 1024
# Bytes per second, each seeder.
SEED_RATE = 4_000_000
T0 = time.monotonic()


def log(msg):
    sys.stderr.write("[%8.3f] %s\n" % (time.monotonic() - T0, msg))
    sys.stderr.flush()


class Fail(Exception):
    pass


def base_settings(listen_ip, name):
    return {
        "listen_interfaces": "%s:0" % listen_ip,
        "enable_dht": False,
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
        | lt.alert_category.connect,
    }


class Node:
    """A session and its name, with its alerts logged as they come."""

    def __init__(self, name, settings):
        self.name = name
        self.ses = lt.session(settings)
        self.udp_port = None

    def drain(self):
        for a in self.ses.pop_alerts():
            log("%s: %s: %s" % (self.name, type(a).__name__, a.message()))
            if isinstance(a, lt.listen_succeeded_alert) and a.socket_type == lt.socket_type_t.utp:
                self.udp_port = a.port
            elif isinstance(a, lt.listen_failed_alert):
                raise Fail("%s could not listen: %s" % (self.name, a.message()))
            elif isinstance(a, lt.incoming_connection_alert):
                ip, port = a.endpoint
                print("SEEN %s %s:%d %s" % (self.name, ip, port, a.socket_type.name), flush=True)

    def wait_listening(self, deadline):
        while self.udp_port is None:
            if time.monotonic() > deadline:
                raise Fail("%s: no uTP listen socket" % self.name)
            self.ses.wait_for_alert(100)
            self.drain()


def payload(size):
    """Deterministic, incompressible bytes."""
    data = bytearray()
    block = hashlib.sha256(b"dispatch").digest()
    while len(data) < size:
        block = hashlib.sha256(block).digest()
        data += block * 64
    return bytes(data[:size])


def run(proxy_host, proxy_port, work, size, timeout, send_local_ep):
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

    # Each seeder uploads at most SEED_RATE, so the download takes a moment
    # and both seeders are connected and serve part of it.
    seed_settings = lambda ip: dict(
        base_settings(ip, "seeder"),
        upload_rate_limit=SEED_RATE,
        ignore_limits_on_local_network=False,
    )
    seeders = [Node(ip, seed_settings(ip)) for ip in SEEDERS]
    for s in seeders:
        s.wait_listening(deadline)
        s.ses.add_torrent({"ti": info, "save_path": seed_dir})

    settings = base_settings("127.0.0.1", "downloader")
    settings.update(
        {
            "proxy_type": lt.proxy_type_t.socks5,
            "proxy_hostname": proxy_host,
            "proxy_port": proxy_port,
            "proxy_peer_connections": True,
            "proxy_tracker_connections": True,
            "proxy_hostnames": True,
            "socks5_udp_send_local_ep": send_local_ep,
        }
    )
    down = Node("downloader", settings)
    down.wait_listening(deadline)

    # The seeders check their copy first.
    for s in seeders:
        h = s.ses.get_torrents()[0]
        while h.status().state != lt.torrent_status.seeding:
            if time.monotonic() > deadline:
                raise Fail("seeder %s never started seeding: %s" % (s.name, h.status().state))
            s.ses.wait_for_alert(100)
            s.drain()
        log("seeder %s seeding on uTP port %d" % (s.name, s.udp_port))

    h = down.ses.add_torrent({"ti": info, "save_path": down_dir})
    last_connect = last_report = 0.0
    while True:
        now = time.monotonic()
        st = h.status()
        if st.is_seeding:
            break
        if now > deadline:
            raise Fail(
                "timed out after %.1f s: %d of %d bytes, state %s, %d peers"
                % (timeout, st.total_wanted_done, size, st.state, st.num_peers)
            )
        # (Re)add the seeders while not all are connected: without a tracker
        # or the DHT, a uTP connect that failed is not retried by itself.
        if st.num_peers < len(seeders) and now - last_connect > 3.0:
            for s in seeders:
                log("downloader: connect_peer %s:%d" % (s.name, s.udp_port))
                h.connect_peer((s.name, s.udp_port))
            last_connect = now
        if now - last_report > 1.0:
            log(
                "downloader: %s, %d/%d bytes, %d peers, %.0f kB/s"
                % (st.state, st.total_wanted_done, size, st.num_peers, st.download_rate / 1000)
            )
            last_report = now
        down.ses.wait_for_alert(100)
        for n in [down] + seeders:
            n.drain()
    secs = time.monotonic() - T0
    for n in [down] + seeders:
        n.drain()
    with open(os.path.join(down_dir, "payload.bin"), "rb") as f:
        got = hashlib.sha256(f.read()).hexdigest()
    if got != want:
        raise Fail("hash mismatch: got %s, want %s" % (got, want))
    print("OK %d %s %.3f" % (size, got, secs), flush=True)


def main():
    proxy_host, proxy_port, work, size, timeout, send_local_ep = sys.argv[1:7]
    try:
        run(proxy_host, int(proxy_port), work, int(size), float(timeout), send_local_ep == "1")
    except Fail as e:
        print("FAIL %s" % e, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
