#!/usr/bin/env python3
"""Soak load for dispatch (issue 11): hours of mixed, checked traffic while
the proxy's RSS, open descriptors and counters are sampled.

Run through benches/soak.sh (release build, one hour by default) or
tests/soak.rs (debug build, two minutes).  Python 3 standard library only.

What runs (all on loopback):
  * two dispatch processes, both with outgoing links 127.0.0.2 and
    127.0.0.3: "auth" (--auth-file: SOCKS5 user/password, HTTP Basic, BIND,
    UDP ASSOCIATE, wrong passwords) and "open" (no auth: SOCKS4, SOCKS4a,
    SOCKS5 without auth, HTTP), since SOCKS4 is refused while auth is on;
  * servers on 127.0.0.1: a TCP "bulk" server (download, upload, echo), an
    HTTP origin and a UDP echo.  Every payload is a slice of one fixed
    pseudo-random stream at an offset chosen per transfer, so every byte
    received is compared with the byte that must be there, and a shift,
    a duplicate, a loss or a swap between connections is seen;
  * WORKERS threads, each picking scenarios by weight: connect/close churn
    (SOCKS5, SOCKS4, SOCKS4a, HTTP CONNECT), bulk downloads, uploads and
    echoes (paced by a shared byte budget, with slow readers that let the
    proxy's buffers fill), UDP associations, BIND, HTTP forward requests
    (kept alive; and a client that reads nothing while its origin sends a
    sized body and closes: issue 11's short downloads), a refused target, bad handshakes (garbage, truncated, oversize, bad
    versions), wrong passwords (RFC 1929 failure, HTTP 407, SOCKS4 refused)
    and clients that vanish mid-transfer (close, or reset by SO_LINGER 0).

Every SAMPLE seconds one line: per proxy VmRSS (KiB), open descriptors,
and the latest per-minute counters from its log, with the load's totals.

Verdict (exit 0 pass, 1 fail):
  * FAIL on any wrong byte, any unexpected error (short transfer, stall,
    wrong reply, proxy gone), or UDP loss above 0.1% (loopback loses none
    with one datagram in flight; a little slack for a loaded machine).
  * Growth, per proxy, for RSS and descriptors, over the samples taken under
    load after a warm-up (the first 10% of the run, at least one sample):
      - the mean of the last third must not exceed the mean of the first
        third by more than a tolerance (descriptors: 10% + 8; RSS: 10% +
        1 MiB), and
      - the series must not rise at every single step (at least 6 samples);
  * After the load stops, descriptors must come back to the idle count
    taken before the load began (within 2, waiting up to 20 s for the
    handshake timeout to reap truncated clients): a leak of even one
    descriptor per thousand connections fails here.
  * The proxies' failure counters must stay 0 (every target is live or a
    refusal, which is not a link's fault).

SOAK_ONLY=sc_bind,sc_udp runs only those scenarios, to chase one failure.
SOAK_INJECT=flip (test of the test) flips one byte in a checked download,
SOAK_INJECT=hold keeps one relayed connection per second open until the end
(what a descriptor leak in the proxy looks like from outside).
"""

import argparse
import base64
import collections
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

# ---------------------------------------------------------------- the stream

N = 1048573  # prime, so the stream's period lines up with no buffer size
_BUF = random.Random(0x50A4).randbytes(N)
DBL = memoryview(_BUF + _BUF)


def stream(start, off, n):
    """n bytes of the stream that begins at `start`, from offset `off`."""
    out = bytearray()
    while n > 0:
        s = (start + off) % N
        k = min(n, N)
        out += DBL[s:s + k]
        off += k
        n -= k
    return out


def view(start, off, n):
    """Like stream() for n <= N, without a copy."""
    s = (start + off) % N
    return DBL[s:s + n]


class Bad(Exception):
    """An unexpected outcome; kind is the error class for the summary."""

    def __init__(self, kind, msg):
        super().__init__(msg)
        self.kind = kind


class Checker:
    """Checks a received byte sequence against the stream from `start`."""

    def __init__(self, start, what):
        self.start = start
        self.off = 0
        self.what = what

    def feed(self, data):
        n = len(data)
        if n == 0:
            return
        exp = view(self.start, self.off, n)
        if data != exp:
            for i in range(n):
                if data[i] != exp[i]:
                    break
            raise Bad("corrupt", "%s: byte %d is %02x, expected %02x" % (
                self.what, self.off + i, data[i], exp[i]))
        self.off += n
        STATS.add_bytes(n)


# ------------------------------------------------------------------ the stats

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.conns = collections.Counter()
        self.errors = collections.Counter()
        self.messages = []
        self.bytes_checked = 0
        self.datagrams = 0
        self.udp_lost = 0
        self.flip = os.environ.get("SOAK_INJECT") == "flip"

    def conn(self, kind):
        with self.lock:
            self.conns[kind] += 1

    def add_bytes(self, n):
        with self.lock:
            self.bytes_checked += n

    def error(self, kind, msg):
        with self.lock:
            self.errors[kind] += 1
            if len(self.messages) < 50:
                self.messages.append("%s %s: %s" % (time.strftime("%H:%M:%S"), kind, msg))
        log("ERROR %s: %s" % (kind, msg))


STATS = Stats()
STOP = threading.Event()
T0 = time.time()
OUT = sys.stdout


def log(line):
    OUT.write("[%7.1f] %s\n" % (time.time() - T0, line))
    OUT.flush()


class Bucket:
    """A shared byte budget (bytes/s) that paces the bulk transfers."""

    def __init__(self, rate):
        self.rate = float(rate)
        self.lock = threading.Lock()
        self.avail = 0.0
        self.t = time.monotonic()

    def take(self, n):
        with self.lock:
            now = time.monotonic()
            self.avail = min(self.rate, self.avail + (now - self.t) * self.rate)
            self.t = now
            self.avail -= n
            wait = -self.avail / self.rate if self.avail < 0 else 0
        if wait > 0:
            time.sleep(min(wait, 2.0))


# ---------------------------------------------------------------- the servers

def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise Bad("short", "closed after %d of %d bytes" % (len(buf), n))
        buf += b
    return bytes(buf)


def serve(listener, handler):
    def loop():
        while True:
            try:
                c, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=guarded, args=(handler, c), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()


def guarded(handler, c):
    try:
        c.settimeout(60)
        handler(c)
    except (OSError, Bad):
        pass  # clients vanish on purpose; what matters is what they see
    finally:
        c.close()


def bulk_handler(c):
    """op 'D' seed len: send the stream; 'U': check it, answer 'OK'/'BD';
    'E': echo until EOF."""
    head = recv_exact(c, 13)
    op, seed, n = head[0:1], struct.unpack(">I", head[1:5])[0], struct.unpack(">Q", head[5:13])[0]
    if op == b"D":
        off = 0
        while off < n:
            k = min(65536, n - off)
            c.sendall(view(seed, off, k))
            off += k
        c.shutdown(socket.SHUT_WR)
        c.recv(1)  # the client closes first: our TIME_WAITs stay few
    elif op == b"U":
        chk = Checker(seed, "upload")
        got = 0
        buf = bytearray(65536)
        try:
            while got < n:
                k = c.recv_into(buf, min(len(buf), n - got))
                if k == 0:
                    break
                exp = view(seed, got, k)
                if memoryview(buf)[:k] != exp:
                    c.sendall(b"BD" + struct.pack(">Q", got))
                    return
                got += k
        except OSError:
            return
        del chk
        c.sendall((b"OK" if got == n else b"SH") + struct.pack(">Q", got))
    elif op == b"E":
        buf = bytearray(65536)
        while True:
            k = c.recv_into(buf)
            if k == 0:
                break
            c.sendall(memoryview(buf)[:k])
        c.shutdown(socket.SHUT_WR)


def http_handler(c):
    """GET /s/SEED/LEN: LEN bytes of the stream; keep-alive.  GET /p/SEED/LEN:
    the same, but all except the last 1000 bytes, a pause, the rest, and
    the connection closed right behind it."""
    f = c.makefile("rb")
    while True:
        line = f.readline(65536)
        if not line:
            return
        m = re.match(rb"GET /([sp])/(\d+)/(\d+) HTTP/1\.1\r\n", line)
        close = False
        while True:
            h = f.readline(65536)
            if h in (b"\r\n", b""):
                break
            if h.lower().startswith(b"connection:") and b"close" in h.lower():
                close = True
        if not m:
            c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        seed, n = int(m.group(2)), int(m.group(3))
        pause = m.group(1) == b"p"
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (
            n, b"Connection: close\r\n" if pause else b""))
        cut = max(0, n - 1000) if pause else n
        off = 0
        while off < n:
            if off == cut:
                time.sleep(0.3)
            k = min(65536, (cut if off < cut else n) - off)
            c.sendall(view(seed, off, k))
            off += k
        if close or pause:
            return


def udp_echo(sock):
    while True:
        try:
            data, peer = sock.recvfrom(65535)
            sock.sendto(data, peer)
        except OSError:
            if STOP.is_set():
                return


def listener(ip="127.0.0.1"):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, 0))
    s.listen(512)
    return s


# --------------------------------------------------------------- the proxies

def die_with_parent():
    """In the child before exec: SIGKILL when the generator dies, so that a
    killed soak (a test's deadline) leaves no proxy behind."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Dispatch:
    def __init__(self, name, binary, outdir, extra):
        self.name = name
        self.logpath = os.path.join(outdir, "dispatch-%s.log" % name)
        self.logf = open(self.logpath, "wb")
        env = dict(os.environ)
        env["RUST_LOG"] = "info"  # -d logs to stdout; info keeps it small
        env.pop("SOAK_INJECT", None)
        self.proc = subprocess.Popen(
            [binary, "-d", "start", "--port", "0", "--quiet", "--handshake-timeout", "3",
             "--bind-timeout", "10"] + extra + ["127.0.0.2", "127.0.0.3"],
            stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=die_with_parent)
        self.pid = self.proc.pid
        self.addr = None
        deadline = time.time() + 30
        while time.time() < deadline and self.addr is None:
            if self.proc.poll() is not None:
                raise SystemExit("dispatch %s exited at start:\n%s" % (name, self.log_text()))
            m = re.search(r"listening on ([\d.]+):(\d+)", self.log_text())
            if m:
                self.addr = (m.group(1), int(m.group(2)))
            else:
                time.sleep(0.05)
        if self.addr is None:
            raise SystemExit("dispatch %s did not start:\n%s" % (name, self.log_text()))

    def log_text(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def describe_fds(self):
        """Each open descriptor, sockets with their addresses, state and
        queues from /proc/net: what a leak report needs to name the culprit."""
        socks = {}
        states = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
                  "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
                  "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}

        def addr(hexa):
            ip, port = hexa.split(":")
            if len(ip) == 8:
                ip = socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(ip, 16)))
            else:
                ip = socket.inet_ntop(socket.AF_INET6, b"".join(
                    struct.pack("<I", int(ip[i:i + 8], 16)) for i in range(0, 32, 8)))
            return "%s:%d" % (ip, int(port, 16))
        for proto in ("tcp", "tcp6", "udp", "udp6"):
            try:
                with open("/proc/%d/net/%s" % (self.pid, proto)) as f:
                    next(f)
                    for line in f:
                        c = line.split()
                        tx, rx = c[4].split(":")
                        socks[c[9]] = "%s %s -> %s %s tx_queue %d rx_queue %d" % (
                            proto, addr(c[1]), addr(c[2]),
                            states.get(c[3], c[3]) if proto.startswith("tcp") else "",
                            int(tx, 16), int(rx, 16))
            except OSError:
                pass
        out = []
        for fd in sorted(os.listdir("/proc/%d/fd" % self.pid), key=int):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (self.pid, fd))
            except OSError:
                continue
            m = re.match(r"socket:\[(\d+)\]", target)
            out.append("fd %s: %s" % (fd, socks.get(m.group(1), target) if m else target))
        return out

    def counters(self):
        """The latest per-minute lines: {link: (conns, failures, up, down)}."""
        out = {}
        pat = re.compile(r"link (\S+)(?: \S+)?: \w+, (\d+) connections?, (\d+) failures?, "
                         r"up (\d+) B, down (\d+) B")
        for line in self.log_text().splitlines():
            m = pat.search(line)
            if m:
                out[m.group(1)] = tuple(int(x) for x in m.groups()[1:])
        return out

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


# ---------------------------------------------------------------- the clients

USER, PASS = "soak", "s3cret-soak"
OTHER_USERS = [("alice", "wonder land"), ("bob", "b0b:colon")]


class Env:
    pass


ENV = Env()


def connect(addr, timeout=30):
    s = socket.create_connection(addr, timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def rst_close(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def socks5_addr(ip, port):
    return b"\x01" + socket.inet_aton(ip) + struct.pack(">H", port)


def read_reply5(s):
    h = recv_exact(s, 4)
    if h[0] != 5:
        raise Bad("proto", "SOCKS5 reply version %r" % h)
    if h[3] == 1:
        rest = recv_exact(s, 6)
        return h[1], (socket.inet_ntoa(rest[:4]), struct.unpack(">H", rest[4:])[0])
    if h[3] == 4:
        rest = recv_exact(s, 18)
        return h[1], (socket.inet_ntop(socket.AF_INET6, rest[:16]), struct.unpack(">H", rest[16:])[0])
    if h[3] == 3:
        n = recv_exact(s, 1)[0]
        rest = recv_exact(s, n + 2)
        return h[1], (rest[:n].decode(), struct.unpack(">H", rest[n:])[0])
    raise Bad("proto", "SOCKS5 reply ATYP %r" % h)


def socks5_login(s, auth):
    """Greets; with auth logs in as USER.  Returns once the method is done."""
    if auth:
        s.sendall(b"\x05\x02\x00\x02")
        if recv_exact(s, 2) != b"\x05\x02":
            raise Bad("proto", "auth proxy did not choose user/password")
        u, p = USER.encode(), PASS.encode()
        s.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
        st = recv_exact(s, 2)
        if st != b"\x01\x00":
            raise Bad("proto", "good password refused: %r" % st)
    else:
        s.sendall(b"\x05\x01\x00")
        if recv_exact(s, 2) != b"\x05\x00":
            raise Bad("proto", "open proxy did not choose no-auth")


def socks5_connect(target, auth=None, domain=False):
    """A relayed TCP connection to target through a proxy (auth or open)."""
    if auth is None:
        auth = random.random() < 0.5
    px = ENV.auth if auth else ENV.open
    s = connect(px.addr)
    socks5_login(s, auth)
    ip, port = target
    if domain:
        h = ip.encode()
        dst = b"\x03" + bytes([len(h)]) + h + struct.pack(">H", port)
    else:
        dst = socks5_addr(ip, port)
    s.sendall(b"\x05\x01\x00" + dst)
    rep, bnd = read_reply5(s)
    if rep != 0:
        raise Bad("proto", "CONNECT to %s refused: %d" % (target, rep))
    if bnd[0] not in ("127.0.0.2", "127.0.0.3"):
        raise Bad("proto", "CONNECT went out from %s, not a link" % (bnd,))
    return s


def socks4_connect(target, a=False):
    s = connect(ENV.open.addr)
    ip, port = target
    if a:
        s.sendall(b"\x04\x01" + struct.pack(">H", port) + b"\x00\x00\x00\x07soak\x00"
                  + ip.encode() + b"\x00")
    else:
        s.sendall(b"\x04\x01" + struct.pack(">H", port) + socket.inet_aton(ip) + b"soak\x00")
    r = recv_exact(s, 8)
    if r[0] != 0 or r[1] != 0x5A:
        raise Bad("proto", "SOCKS4%s reply %r" % ("a" if a else "", r))
    return s


def basic(user, pw):
    return "Proxy-Authorization: Basic %s\r\n" % base64.b64encode(
        ("%s:%s" % (user, pw)).encode()).decode()


def read_head(s, limit=65536):
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        b = s.recv(4096)
        if not b:
            raise Bad("short", "closed before the end of a response head: %r" % bytes(buf[:200]))
        buf += b
        if len(buf) > limit:
            raise Bad("proto", "response head too long")
    i = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:i]).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    return status, head, bytes(buf[i:])


def http_connect(target, auth=None):
    if auth is None:
        auth = random.random() < 0.5
    px = ENV.auth if auth else ENV.open
    s = connect(px.addr)
    hp = "%s:%d" % target
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (
        hp, hp, basic(USER, PASS) if auth else "")).encode())
    status, head, rest = read_head(s)
    if status != 200:
        raise Bad("proto", "CONNECT answered %d: %r" % (status, head[:200]))
    if rest:
        raise Bad("proto", "bytes after the 200 of a CONNECT")
    return s


def any_tunnel(target):
    r = random.random()
    if r < 0.5:
        return "socks5", socks5_connect(target)
    if r < 0.6:
        return "socks5-name", socks5_connect(target, domain=True)
    if r < 0.7:
        return "socks4", socks4_connect(target)
    if r < 0.8:
        return "socks4a", socks4_connect(target, a=True)
    return "http-connect", http_connect(target)


def bulk_op(s, op, seed, n):
    s.sendall(op + struct.pack(">I", seed) + struct.pack(">Q", n))


def expect_eof(s, what):
    b = s.recv(65536)
    if b:
        raise Bad("proto", "%s: %d bytes more than sent" % (what, len(b)))


def recv_checked(s, chk, n, slow=False, pace=True):
    buf = bytearray(65536)
    got = 0
    while got < n:
        k = s.recv_into(buf, min(len(buf), n - got))
        if k == 0:
            raise Bad("short", "%s: closed %d bytes short of %d" % (chk.what, n - got, n))
        data = memoryview(buf)[:k]
        if STATS.flip and random.random() < 0.01:
            STATS.flip = False
            buf[k // 2] ^= 0x20
            log("SOAK_INJECT=flip: flipped one received byte")
        chk.feed(data)
        got += k
        if pace:
            ENV.bucket.take(k)
        if slow and random.random() < 0.05:
            time.sleep(random.uniform(0.05, 0.4))  # let the proxy's buffers fill


# ----------------------------------------------------------------- scenarios

def sc_churn():
    kind, s = any_tunnel(ENV.bulk)
    STATS.conn("churn-" + kind)
    with s:
        n = random.randint(1, 2000)
        seed = random.randrange(N)
        bulk_op(s, b"E", seed, 0)
        s.sendall(view(seed, 0, n))
        if random.random() < 0.8:
            recv_checked(s, Checker(seed, "churn echo"), n, pace=False)
            s.shutdown(socket.SHUT_WR)
            expect_eof(s, "churn echo")
        # else: closed with the echo unread


def size():
    return random.choice([random.randint(1, 65536), random.randint(65536, 1 << 20),
                          random.randint(1 << 20, 4 << 20)])


def sc_download():
    kind, s = any_tunnel(ENV.bulk)
    STATS.conn("download")
    with s:
        n, seed = size(), random.randrange(N)
        bulk_op(s, b"D", seed, n)
        recv_checked(s, Checker(seed, "download of %d via %s" % (n, kind)), n,
                     slow=random.random() < 0.3)
        expect_eof(s, "download")


def send_paced(s, seed, n):
    off = 0
    while off < n:
        k = min(65536, n - off)
        ENV.bucket.take(k)
        s.sendall(view(seed, off, k))
        off += k


def sc_upload():
    kind, s = any_tunnel(ENV.bulk)
    STATS.conn("upload")
    with s:
        n, seed = size(), random.randrange(N)
        bulk_op(s, b"U", seed, n)
        send_paced(s, seed, n)
        r = recv_exact(s, 10)
        got = struct.unpack(">Q", r[2:])[0]
        if r[:2] == b"BD":
            raise Bad("corrupt", "upload of %d via %s: server saw a wrong byte at %d" % (n, kind, got))
        if r[:2] != b"OK":
            raise Bad("short", "upload of %d via %s: server got %d" % (n, kind, got))
        STATS.add_bytes(n)


def sc_echo():
    kind, s = any_tunnel(ENV.bulk)
    STATS.conn("echo")
    with s:
        n, seed = size(), random.randrange(N)
        bulk_op(s, b"E", seed, 0)
        err = []

        def writer():
            try:
                send_paced(s, seed, n)
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                err.append(e)
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        recv_checked(s, Checker(seed, "echo of %d via %s" % (n, kind)), n,
                     slow=random.random() < 0.3)
        t.join(60)
        if err:
            raise err[0]
        expect_eof(s, "echo")


def sc_http_forward():
    auth = random.random() < 0.5
    px = ENV.auth if auth else ENV.open
    STATS.conn("http-forward")
    with connect(px.addr) as s:
        reqs = random.randint(1, 3)
        pending = b""
        for i in range(reqs):
            n, seed = random.choice([random.randint(0, 4096), size()]), random.randrange(N)
            last = i == reqs - 1
            url = "http://%s:%d/s/%d/%d" % (ENV.http[0], ENV.http[1], seed, n)
            s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\n%s%s\r\n" % (
                url, ENV.http[0], ENV.http[1], basic(USER, PASS) if auth else "",
                "Connection: close\r\n" if last else "")).encode())
            status, head, rest = read_head(s)
            if status != 200:
                raise Bad("proto", "GET answered %d: %r" % (status, head[:300]))
            m = re.search(r"(?i)content-length: *(\d+)", head)
            if not m or int(m.group(1)) != n:
                raise Bad("proto", "GET head without the right length: %r" % head[:300])
            chk = Checker(seed, "http body of %d" % n)
            chk.feed(memoryview(rest)[:n])
            if len(rest) > n:
                raise Bad("proto", "bytes after a body")
            recv_checked(s, chk, n - len(rest))
        del pending


def sc_http_forward_slow():
    """A sized response the origin ends with its EOF while the client is not
    reading: what waits in the proxy must still all arrive (issue 11's
    "transfer closed with 37379 bytes remaining").  The window is a ring
    (128 KiB) past what the sockets to the client hold, hence sizes around
    those (a few MB on loopback)."""
    auth = random.random() < 0.5
    px = ENV.auth if auth else ENV.open
    STATS.conn("http-forward-slow")
    with connect(px.addr) as s:
        # A fixed receive buffer: the kernel's autotuning would make the
        # window the test aims at move.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        n, seed = random.randint(2 << 20, 4608 << 10), random.randrange(N)
        s.sendall(("GET http://%s:%d/p/%d/%d HTTP/1.1\r\nHost: %s:%d\r\n%sConnection: close\r\n\r\n" % (
            ENV.http[0], ENV.http[1], seed, n, ENV.http[0], ENV.http[1],
            basic(USER, PASS) if auth else "")).encode())
        time.sleep(0.8)  # not reading while the origin finishes and closes
        status, head, rest = read_head(s)
        if status != 200:
            raise Bad("proto", "GET answered %d: %r" % (status, head[:300]))
        chk = Checker(seed, "slow-client http body of %d" % n)
        chk.feed(memoryview(rest)[:n])
        recv_checked(s, chk, n - len(rest))
        expect_eof(s, "slow-client http body")


def sc_udp():
    auth = random.random() < 0.5
    px = ENV.auth if auth else ENV.open
    STATS.conn("udp-associate")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    u.settimeout(2)
    with connect(px.addr) as c, u:
        socks5_login(c, auth)
        c.sendall(b"\x05\x03\x00" + socks5_addr("127.0.0.1", u.getsockname()[1]))
        rep, relay = read_reply5(c)
        if rep != 0:
            raise Bad("proto", "UDP ASSOCIATE refused: %d" % rep)
        hdr = b"\x00\x00\x00" + socks5_addr(*ENV.udp)
        for i in range(random.randint(5, 60)):
            n, seed = random.randint(1, 1400), random.randrange(N)
            payload = struct.pack(">I", i) + bytes(view(seed, 0, n))
            ok = False
            for attempt in range(2):
                u.sendto(hdr + payload, relay)
                try:
                    while True:
                        d = u.recv(65535)
                        if d[:10] != hdr:
                            raise Bad("proto", "UDP reply header %r" % d[:10])
                        if d[10:14] == struct.pack(">I", i):
                            break
                    if d[10:] != payload:
                        raise Bad("corrupt", "UDP datagram %d of %d bytes differs" % (i, n))
                    ok = True
                    break
                except socket.timeout:
                    continue
            with STATS.lock:
                STATS.datagrams += 1
                if not ok:
                    STATS.udp_lost += 1
            if ok:
                STATS.add_bytes(n)
        if random.random() < 0.5:
            rst_close(c)


def sc_bind():
    auth = random.random() < 0.5
    px = ENV.auth if auth else ENV.open
    STATS.conn("bind")
    with connect(px.addr) as c:
        socks5_login(c, auth)
        c.sendall(b"\x05\x02\x00" + socks5_addr("127.0.0.1", 0))
        rep, bnd = read_reply5(c)
        if rep != 0:
            raise Bad("proto", "BIND refused: %d" % rep)
        if bnd[0] not in ("127.0.0.2", "127.0.0.3"):
            raise Bad("proto", "BIND listens on %s, not a link" % (bnd,))
        p = socket.create_connection(bnd, timeout=30, source_address=("127.0.0.1", 0))
        with p:
            rep, peer = read_reply5(c)
            if rep != 0 or peer != p.getsockname():
                raise Bad("proto", "BIND second reply %d %s, peer is %s" % (rep, peer, p.getsockname()))
            n1, s1 = random.randint(1, 256 << 10), random.randrange(N)
            n2, s2 = random.randint(1, 256 << 10), random.randrange(N)
            err = []

            def peer_side():
                try:
                    send_paced(p, s2, n2)
                    p.shutdown(socket.SHUT_WR)
                    recv_checked(p, Checker(s1, "BIND client to peer"), n1)
                    expect_eof(p, "BIND client to peer")
                except (OSError, Bad) as e:
                    err.append(e)
            t = threading.Thread(target=peer_side, daemon=True)
            t.start()
            send_paced(c, s1, n1)
            c.shutdown(socket.SHUT_WR)
            recv_checked(c, Checker(s2, "BIND peer to client"), n2)
            expect_eof(c, "BIND peer to client")
            t.join(60)
            if err:
                raise err[0]


def closed_by_proxy(s, within=20):
    """Reads until the proxy closes; returns what came.  A reset counts as
    closed.  Not closed within `within` seconds is an error."""
    s.settimeout(within)
    out = bytearray()
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return bytes(out)
            out += b
            if len(out) > 1 << 20:
                raise Bad("proto", "endless answer to a bad handshake")
    except ConnectionResetError:
        return bytes(out)
    except socket.timeout:
        raise Bad("hang", "proxy kept a bad client %ds: got %r" % (within, bytes(out[:60])))


def sc_bad_handshake():
    px = random.choice([ENV.auth, ENV.open])
    v = random.randrange(8)
    STATS.conn("bad-handshake")
    with connect(px.addr) as s:
        if v == 0:  # garbage that is not 4 or 5: the HTTP side refuses it
            g = bytes(random.randrange(6, 256) for _ in range(random.randint(1, 600)))
            s.sendall(g + b"\r\n\r\n")
            out = closed_by_proxy(s)
            if out and not re.match(rb"HTTP/1\.[01] 4\d\d ", out):
                raise Bad("proto", "garbage answered %r" % out[:80])
        elif v == 1:  # a truncated SOCKS5 request, then silence: the handshake timeout
            s.sendall(b"\x05\x01\x00")
            s.recv(2)
            s.sendall(b"\x05\x01\x00\x01\x7f")
            closed_by_proxy(s)
        elif v == 2:  # truncated, then half-closed
            s.sendall(random.choice([b"\x05", b"\x05\x02\x00", b"\x04\x01\x00",
                                     b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n"]))
            s.shutdown(socket.SHUT_WR)
            closed_by_proxy(s)
        elif v == 3:  # an oversize HTTP head: 431
            s.sendall(b"GET http://127.0.0.1/ HTTP/1.1\r\nX-Pad: ")
            try:
                for _ in range(20):
                    s.sendall(b"a" * 1024)
                s.sendall(b"\r\n\r\n")
            except OSError:
                pass
            out = closed_by_proxy(s)
            if out and not out.startswith(b"HTTP/1.1 431"):
                raise Bad("proto", "oversize head answered %r" % out[:80])
        elif v == 4:  # SOCKS5 with no method, or a bad version in the request
            s.sendall(b"\x05\x00")
            out = closed_by_proxy(s)
            if out not in (b"", b"\x05\xff"):
                raise Bad("proto", "no-method greeting answered %r" % out)
        elif v == 5:  # an unknown ATYP
            socks5_login(s, px is ENV.auth)
            s.sendall(b"\x05\x01\x00\x09\x00\x00\x00\x00\x00\x50")
            out = closed_by_proxy(s)
            if out and (out[0] != 5 or out[1] == 0):
                raise Bad("proto", "unknown ATYP answered %r" % out)
        elif v == 6:  # an oversize SOCKS4 user id
            s.sendall(b"\x04\x01\x00\x50\x7f\x00\x00\x01")
            try:
                for _ in range(20):
                    s.sendall(b"u" * 1024)
            except OSError:
                pass
            out = closed_by_proxy(s)
            if out and (len(out) != 8 or out[1] == 0x5A):
                raise Bad("proto", "oversize SOCKS4 user id answered %r" % out)
        else:  # an unknown command
            socks5_login(s, px is ENV.auth)
            s.sendall(b"\x05\x07\x00" + socks5_addr(*ENV.bulk))
            out = closed_by_proxy(s)
            if out and (out[0] != 5 or out[1] == 0):
                raise Bad("proto", "unknown command answered %r" % out)


def sc_wrong_password():
    v = random.randrange(5)
    STATS.conn("wrong-password")
    with connect(ENV.auth.addr) as s:
        if v <= 1:
            user, pw = (USER, PASS + "x") if v == 0 else ("nobody", PASS)
            s.sendall(b"\x05\x01\x02")
            if recv_exact(s, 2) != b"\x05\x02":
                raise Bad("proto", "user/password not chosen")
            u, p = user.encode(), pw.encode()
            s.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
            out = closed_by_proxy(s)
            if len(out) != 2 or out[0] != 1 or out[1] == 0:
                raise Bad("proto", "wrong password answered %r (RFC 1929: 01 xx, xx != 0)" % out)
        elif v == 2:
            s.sendall(b"\x05\x01\x00")
            out = closed_by_proxy(s)
            if out != b"\x05\xff":
                raise Bad("proto", "no-auth offered to an auth proxy answered %r" % out)
        elif v == 3:
            s.sendall(("CONNECT %s:%d HTTP/1.1\r\n%s\r\n" % (
                ENV.bulk[0], ENV.bulk[1], basic(USER, "wrong"))).encode())
            status, head, _ = read_head(s)
            if status != 407:
                raise Bad("proto", "HTTP wrong password answered %d" % status)
        else:
            s.sendall(b"\x04\x01" + struct.pack(">H", ENV.bulk[1]) + socket.inet_aton(ENV.bulk[0])
                      + b"soak\x00")
            out = closed_by_proxy(s)
            if len(out) != 8 or out[1] != 0x5B:
                raise Bad("proto", "SOCKS4 on an auth proxy answered %r" % out)
        # a good login on another user of the file, now and then
    if random.random() < 0.3:
        u, p = random.choice(OTHER_USERS)
        with connect(ENV.auth.addr) as s:
            s.sendall(b"\x05\x01\x02")
            recv_exact(s, 2)
            s.sendall(b"\x01" + bytes([len(u)]) + u.encode() + bytes([len(p)]) + p.encode())
            if recv_exact(s, 2) != b"\x01\x00":
                raise Bad("proto", "good login of %s refused" % u)


def sc_refused():
    STATS.conn("refused-target")
    px = random.choice([ENV.auth, ENV.open])
    with connect(px.addr) as s:
        socks5_login(s, px is ENV.auth)
        s.sendall(b"\x05\x01\x00" + socks5_addr("127.0.0.1", ENV.closed))
        rep, _ = read_reply5(s)
        if rep != 5:
            raise Bad("proto", "CONNECT to a closed port answered %d, not 5 (refused)" % rep)


def sc_vanish():
    kind, s = any_tunnel(ENV.bulk)
    STATS.conn("vanish")
    rst = random.random() < 0.5
    try:
        v = random.randrange(3)
        seed = random.randrange(N)
        if v == 0:  # mid-download
            bulk_op(s, b"D", seed, 4 << 20)
            recv_checked(s, Checker(seed, "vanishing download"), random.randint(0, 256 << 10))
        elif v == 1:  # mid-upload
            bulk_op(s, b"U", seed, 4 << 20)
            send_paced(s, seed, random.randint(0, 256 << 10))
        else:  # mid-echo, with unread bytes on both sides
            bulk_op(s, b"E", seed, 0)
            s.setblocking(False)
            try:
                s.send(view(seed, 0, random.randint(1, 512 << 10)))
            except BlockingIOError:
                pass
            time.sleep(random.uniform(0, 0.05))
    finally:
        if rst:
            rst_close(s)
        else:
            s.close()


def sc_vanish_handshake():
    """A client gone during the handshake or the connect."""
    STATS.conn("vanish-handshake")
    px = random.choice([ENV.auth, ENV.open])
    s = connect(px.addr)
    v = random.randrange(3)
    if v == 0:
        s.sendall(b"\x05\x01")
    elif v == 1:
        socks5_login(s, px is ENV.auth)
        s.sendall(b"\x05\x01\x00" + socks5_addr(*ENV.bulk))  # gone before the reply
    else:
        s.sendall(b"CONNECT %s:%d HTTP/1.1\r\n" % (ENV.bulk[0].encode(), ENV.bulk[1]))
    if random.random() < 0.5:
        rst_close(s)
    else:
        s.close()


# Two kinds of worker, alternating: bulk ones move the paced bytes, light
# ones make the connection churn, so a long transfer never starves the churn.
BULK = [(sc_download, 8), (sc_upload, 6), (sc_echo, 6), (sc_http_forward, 6), (sc_bind, 4),
        (sc_vanish, 6), (sc_http_forward_slow, 3)]
LIGHT = [(sc_churn, 30), (sc_http_forward, 2), (sc_udp, 4), (sc_bad_handshake, 8),
         (sc_wrong_password, 6), (sc_refused, 3), (sc_vanish, 3), (sc_vanish_handshake, 6)]


def worker(idx):
    rng_fns = [f for f, w in (BULK if idx % 2 == 0 else LIGHT) for _ in range(w)]
    only = os.environ.get("SOAK_ONLY")  # e.g. sc_bind,sc_udp: to chase one failure
    if only:
        rng_fns = [f for f, _ in BULK + LIGHT if f.__name__ in only.split(",")]
    while not STOP.is_set():
        fn = random.choice(rng_fns)
        try:
            fn()
        except Bad as e:
            STATS.error(e.kind, "%s: %s" % (fn.__name__, e))
        except socket.timeout as e:
            STATS.error("stall", "%s: timed out: %s" % (fn.__name__, e))
        except OSError as e:
            STATS.error("os", "%s: %r" % (fn.__name__, e))
        except Exception as e:  # a bug of the generator is an error too
            STATS.error("generator", "%s: %s" % (fn.__name__, traceback.format_exc()))
        time.sleep(random.uniform(0, ENV.pause))


def hold_connections():
    """SOAK_INJECT=hold: one more relayed connection a second, never closed."""
    held = []
    while not STOP.wait(1):
        try:
            held.append(socks5_connect(ENV.bulk))
        except (OSError, Bad):
            pass
    return held


# ------------------------------------------------------------------- verdict

def mean(xs):
    return sum(xs) / len(xs) if xs else 0.0


def growth(series, rel, absolute, name):
    """Returns a failure message, or None."""
    if len(series) < 3:
        return None
    third = max(1, len(series) // 3)
    first, last = mean(series[:third]), mean(series[-third:])
    if last > first * (1 + rel) + absolute:
        return "%s grew: mean of the first third %.0f, of the last third %.0f (allowed %.0f)" % (
            name, first, last, first * (1 + rel) + absolute)
    if len(series) >= 6 and all(b > a for a, b in zip(series, series[1:])):
        return "%s rose at every sample: %s" % (name, series)
    return None


def main():
    global OUT
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 3600)))
    ap.add_argument("--sample", type=float, default=None, help="seconds between samples")
    ap.add_argument("--bin", default=os.environ.get("BIN", "target/release/dispatch"))
    ap.add_argument("--out", default=None, help="directory for the proxies' logs")
    ap.add_argument("--workers", type=int, default=int(os.environ.get("SOAK_WORKERS", 8)))
    ap.add_argument("--rate", type=float, default=float(os.environ.get("SOAK_RATE", 8e6)),
                    help="bulk bytes a second, all workers together")
    ap.add_argument("--pause", type=float, default=0.05, help="most a worker sleeps between scenarios")
    a = ap.parse_args()
    if a.sample is None:
        a.sample = 60.0 if a.seconds >= 1800 else max(2.0, a.seconds / 15)
    outdir = a.out or tempfile.mkdtemp(prefix="dispatch-soak-")
    os.makedirs(outdir, exist_ok=True)
    ENV.bucket = Bucket(a.rate)
    ENV.pause = a.pause

    # the proxies first: they are forked before any thread exists
    authfile = os.path.join(outdir, "users")
    with open(authfile, "w") as f:
        f.write("# soak users\n%s:%s\n" % (USER, PASS))
        for u, p in OTHER_USERS:
            f.write("%s:%s\n" % (u, p))
    ENV.auth = Dispatch("auth", a.bin, outdir, ["--auth-file", authfile])
    ENV.open = Dispatch("open", a.bin, outdir, [])
    proxies = [ENV.auth, ENV.open]

    # servers
    bl, hl = listener(), listener()
    serve(bl, bulk_handler)
    serve(hl, http_handler)
    ENV.bulk, ENV.http = bl.getsockname(), hl.getsockname()
    us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    us.bind(("127.0.0.1", 0))
    us.settimeout(1)
    ENV.udp = us.getsockname()
    threading.Thread(target=udp_echo, args=(us,), daemon=True).start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connects are refused
    ENV.closed = closed.getsockname()[1]

    def shutdown(*_):
        STOP.set()
    signal.signal(signal.SIGTERM, shutdown)

    time.sleep(0.5)
    idle = {p.name: p.fds() for p in proxies}
    start_rss = {p.name: p.rss_kib() for p in proxies}
    log("soak: %.0f s, sample every %.0f s, %d workers, bulk %.1f MB/s; binary %s; logs in %s" % (
        a.seconds, a.sample, a.workers, a.rate / 1e6, a.bin, outdir))
    for p in proxies:
        log("proxy %s pid %d on %s:%d, idle: %d fds, VmRSS %d KiB" % (
            p.name, p.pid, p.addr[0], p.addr[1], idle[p.name], start_rss[p.name]))

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(a.workers)]
    for w in workers:
        w.start()
    if os.environ.get("SOAK_INJECT") == "hold":
        threading.Thread(target=hold_connections, daemon=True).start()

    samples = []  # (t, {name: (rss, fds)})
    cpu0 = {p.name: proc_cpu(p.pid) for p in proxies}
    begin = time.time()
    next_sample = begin + a.sample
    while not STOP.is_set():
        now = time.time()
        if now - begin >= a.seconds:
            break
        if not all(p.alive() for p in proxies):
            STATS.error("proxy-exit", "a proxy exited: %s" % [(p.name, p.proc.poll()) for p in proxies])
            break
        if now >= next_sample:
            next_sample += a.sample
            snap = {}
            parts = []
            for p in proxies:
                rss, fds = p.rss_kib(), p.fds()
                snap[p.name] = (rss, fds)
                ctr = p.counters()
                conns = sum(v[0] for v in ctr.values())
                fails = sum(v[1] for v in ctr.values())
                parts.append("%s rss %d KiB fds %d cpu %.1f s link conns %d failures %d" % (
                    p.name, rss, fds, proc_cpu(p.pid) - cpu0[p.name], conns, fails))
            samples.append((now - begin, snap))
            with STATS.lock:
                tot = sum(STATS.conns.values())
                errs = sum(STATS.errors.values())
                checked = STATS.bytes_checked
            log("sample %3d | %s | load %d conns %.1f MB checked %d errors" % (
                len(samples), " | ".join(parts), tot, checked / 1e6, errs))
        STOP.wait(min(1.0, max(0.0, next_sample - time.time())))
    elapsed = time.time() - begin
    STOP.set()
    for w in workers:
        w.join(90)
    stuck = [w for w in workers if w.is_alive()]
    if stuck:
        STATS.error("stall", "%d workers still busy 90 s after the end" % len(stuck))

    # settle: descriptors back to the idle count
    end = {}
    fails = []
    for p in proxies:
        if not p.alive():
            fails.append("proxy %s exited (status %s)" % (p.name, p.proc.poll()))
            continue
        deadline = time.time() + 20
        fds = p.fds()
        while fds > idle[p.name] + 2 and time.time() < deadline:
            time.sleep(0.5)
            fds = p.fds()
        end[p.name] = (p.rss_kib(), fds)
        if fds > idle[p.name] + 2:
            fails.append("proxy %s holds %d descriptors after the load, %d before it" % (
                p.name, fds, idle[p.name]))
            for line in p.describe_fds():
                log("proxy %s still holds %s" % (p.name, line))

    # growth
    warm = max(1, int(len(samples) * 0.1))
    body = samples[warm:]
    for p in proxies:
        rss = [s[p.name][0] for _, s in body]
        fds = [s[p.name][1] for _, s in body]
        for msg in (growth(rss, 0.10, 1024, "proxy %s VmRSS (KiB)" % p.name),
                    growth(fds, 0.10, 8, "proxy %s descriptors" % p.name)):
            if msg:
                fails.append(msg)
    if len(samples) < 3:
        fails.append("only %d samples: too short a run to judge growth" % len(samples))
    counters = {}
    cpu_end = {p.name: proc_cpu(p.pid) - cpu0[p.name] for p in proxies}
    for p in proxies:
        p.stop()
        ctr = p.counters()  # the exit lines are the last
        counters[p.name] = ctr
        f = sum(v[1] for v in ctr.values())
        if f:
            fails.append("proxy %s counted %d link failures" % (p.name, f))

    with STATS.lock:
        if STATS.errors:
            fails.append("errors: %s" % dict(STATS.errors))
        if STATS.datagrams and STATS.udp_lost > max(0, STATS.datagrams // 1000):
            fails.append("UDP: %d of %d datagrams lost" % (STATS.udp_lost, STATS.datagrams))

    # summary
    log("=" * 72)
    log("summary: %.0f s under load (%s, %d cores, %s)" % (
        elapsed, time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), os.cpu_count(),
        os.uname().release))
    log("connections by kind: %s (total %d)" % (
        ", ".join("%s %d" % kv for kv in sorted(STATS.conns.items())), sum(STATS.conns.values())))
    t = os.times()
    log("CPU: load generator %.0f s, proxies %s" % (t.user + t.system, ", ".join(
        "%s %.1f s" % (p.name, cpu_end.get(p.name, 0.0)) for p in proxies)))
    log("bytes checked: %d (%.1f MB); UDP datagrams %d, lost %d" % (
        STATS.bytes_checked, STATS.bytes_checked / 1e6, STATS.datagrams, STATS.udp_lost))
    log("errors by kind: %s" % (dict(STATS.errors) or "none"))
    for m in STATS.messages[:20]:
        log("  " + m)
    for p in proxies:
        first = samples[0][1][p.name] if samples else (None, None)
        last = samples[-1][1][p.name] if samples else (None, None)
        e = end.get(p.name, (None, None))
        log("proxy %s: descriptors idle %s, first sample %s, last sample %s, after the load %s" % (
            p.name, idle[p.name], first[1], last[1], e[1]))
        log("proxy %s: VmRSS KiB at start %s, first sample %s, last sample %s, after the load %s" % (
            p.name, start_rss[p.name], first[0], last[0], e[0]))
        for link, v in sorted(counters[p.name].items()):
            log("proxy %s: link %s: %d connections, %d failures, up %d B, down %d B" % ((p.name, link) + v))
    if fails:
        for f in fails:
            log("FAIL: " + f)
        log("soak FAILED")
        return 1
    log("soak passed")
    return 0


def proc_cpu(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


if __name__ == "__main__":
    sys.exit(main())
