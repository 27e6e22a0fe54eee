#!/usr/bin/env python3
"""Reproduces issue 11's short downloads ("curl: (18) transfer closed with
37379 bytes remaining") on loopback, for an HTTP forward request.

An origin answers GET with a Content-Length body and `Connection: close`:
all but the last 1000 bytes, a pause, the rest, then it closes. The client
does not read during that time. When the body is a little larger than what
the sockets between the proxy and the client hold, the rest of the body
waits in the proxy's ring (128 KiB) as the origin's EOF arrives. Before
commit "forward: an origin's EOF behind a whole response is not a cut
response", the EOF was taken for a response cut short and the connection
closed with the ring unflushed: a 200 with a clean close, up to 128 KiB
short. Sizes are scanned because where that window lies depends on the
kernel's socket buffers (about 2.8 MB on the machine it was found on).

    python3 benches/soak/repro_forward_eof.py target/release/dispatch

Prints one line per download; exit 1 if any was short. Loopback only.
"""

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/dispatch"
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)
    body = {}

    def origin():
        while True:
            c, _ = lst.accept()
            threading.Thread(target=answer, args=(c,), daemon=True).start()

    def answer(c):
        with c:
            head = b""
            while b"\r\n\r\n" not in head:
                head += c.recv(4096)
            b = body["now"]
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(b)
                      + b[:-1000])
            time.sleep(0.3)
            c.sendall(b[-1000:])

    threading.Thread(target=origin, daemon=True).start()
    state = tempfile.mkdtemp(prefix="repro-forward-eof-")
    proxy = subprocess.Popen([binary, "start", "--port", "0", "--quiet", "127.0.0.2"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             env=dict(os.environ, XDG_STATE_HOME=state))
    try:
        port = int(re.search(rb"listening on [\d.]+:(\d+)", proxy.stdout.readline()).group(1))
        short = tried = 0
        for n in range(2 << 20, 4400 << 10, 48 << 10):
            body["now"] = bytes((i * 7) % 251 for i in range(n))
            c = socket.socket()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            c.connect(("127.0.0.1", port))
            c.sendall(b"GET http://127.0.0.1:%d/f HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n"
                      % lst.getsockname()[1])
            time.sleep(0.8)  # not reading while the origin finishes
            data = bytearray()
            while True:
                b = c.recv(65536)
                if not b:
                    break
                data += b
            c.close()
            head, _, got = bytes(data).partition(b"\r\n\r\n")
            tried += 1
            ok = got == body["now"]
            short += not ok
            print("body %7d: %s, got %7d%s" % (
                n, head.split(b"\r\n")[0].decode(), len(got),
                "" if ok else "  <-- SHORT, %d bytes remaining" % (n - len(got))))
        print("%d of %d short" % (short, tried))
        return 1 if short else 0
    finally:
        proxy.terminate()
        proxy.wait()


if __name__ == "__main__":
    sys.exit(main())
