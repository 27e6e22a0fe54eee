"""Chunked download the way download managers and browsers do it: WORKERS
threads pull CHUNK-byte pieces of one file from a shared queue, each piece
over a new TCP connection (HTTP/1.1 Range request, Connection: close),
either through a SOCKS5 proxy or, as the DIRECT baseline, bound to an
interface (SO_BINDTODEVICE). Run by benches/aggregate.sh (MODE=chunks).

    python3 chunks.py HOST PORT PATH SIZE CHUNK WORKERS OUT socks=IP:PORT
    python3 chunks.py HOST PORT PATH SIZE CHUNK WORKERS OUT direct=l1,l1,l2,...

With direct=, worker k is bound to the k-th interface of the list (cycled).
Writes the file to OUT and prints one line:
    OK <seconds> <sha256> <chunks per interface, direct only>
or FAIL <reason> (exit status 1). The time runs from the first connection
to the last byte.
"""

import hashlib
import queue
import socket
import struct
import sys
import threading
import time

SO_BINDTODEVICE = 25
TIMEOUT = 120


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise IOError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += b
    return bytes(buf)


def open_conn(host, port, route):
    kind, arg = route
    if kind == "socks":
        phost, pport = arg
        s = socket.create_connection((phost, pport), timeout=TIMEOUT)
        s.sendall(b"\x05\x01\x00")
        if recv_exact(s, 2) != b"\x05\x00":
            raise IOError("SOCKS5 method refused")
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + struct.pack(">H", port))
        head = recv_exact(s, 4)
        if head[1] != 0:
            raise IOError("SOCKS5 CONNECT failed: reply %d" % head[1])
        atyp = head[3]
        rest = {1: 4 + 2, 4: 16 + 2}.get(atyp)
        if rest is None:
            rest = recv_exact(s, 1)[0] + 2
        recv_exact(s, rest)
        return s
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, arg.encode())
    s.connect((host, port))
    return s


def fetch(host, port, path, a, b, route, out):
    """Bytes a..=b into out[a:b+1] over a new connection."""
    s = open_conn(host, port, route)
    try:
        req = "GET %s HTTP/1.1\r\nHost: %s:%d\r\nRange: bytes=%d-%d\r\nConnection: close\r\n\r\n" % (
            path, host, port, a, b)
        s.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            got = s.recv(4096)
            if not got:
                raise IOError("no response head")
            head += got
        head, body = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 206 " not in lines[0] + " ":
            raise IOError("unexpected status: %s" % lines[0])
        want = b - a + 1
        view = memoryview(out)[a:b + 1]
        n = len(body[:want])
        view[:n] = body[:want]
        while n < want:
            got = s.recv_into(view[n:], want - n)
            if not got:
                raise IOError("body cut after %d of %d bytes" % (n, want))
            n += got
    finally:
        s.close()


def main():
    host, port, path, size, chunk, workers, out_path, how = sys.argv[1:9]
    port, size, chunk, workers = int(port), int(size), int(chunk), int(workers)
    kind, _, arg = how.partition("=")
    if kind == "socks":
        ip, _, p = arg.rpartition(":")
        routes = [("socks", (ip, int(p)))] * workers
    elif kind == "direct":
        names = arg.split(",")
        routes = [("direct", names[k % len(names)]) for k in range(workers)]
    else:
        raise SystemExit("route must be socks=IP:PORT or direct=IF,IF,...")
    out = bytearray(size)
    todo = queue.Queue()
    for a in range(0, size, chunk):
        todo.put((a, min(a + chunk, size) - 1))
    errors = []
    per_if = {}
    lock = threading.Lock()

    def worker(route):
        while not errors:
            try:
                a, b = todo.get_nowait()
            except queue.Empty:
                return
            try:
                fetch(host, port, path, a, b, route, out)
            except Exception as e:  # reported once, stops the others
                errors.append("chunk %d-%d: %s" % (a, b, e))
                return
            with lock:
                per_if[route[1]] = per_if.get(route[1], 0) + 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(r,)) for r in routes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0
    if errors:
        print("FAIL %s" % errors[0], flush=True)
        return 1
    with open(out_path, "wb") as f:
        f.write(out)
    split = ""
    if kind == "direct":
        split = ",".join("%s:%d" % (n, per_if.get(n, 0)) for n in sorted({r[1] for r in routes}))
    print("OK %.3f %s %s" % (secs, hashlib.sha256(out).hexdigest(), split), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
