#!/usr/bin/env python3
"""reuse-client.py - many short HTTPS connections from a few source ports.

Usage: reuse-client.py ADDR NAME CAFILE --count N --ports FIRST-LAST

Makes N connections one after the other to ADDR:443, each from the next source
port of FIRST..LAST in turn (bound explicitly, SO_REUSEADDR), so that every
4-tuple is used again a few connections later. Each connection does a TLS
handshake for NAME (verified against CAFILE), sends `GET /` with
`Connection: close` and reads until the server closes: the server closes first,
so it is the server that holds the 4-tuple in TIME_WAIT, as with a load
generator against a web server. A port whose previous connection is still
finishing on this side (EADDRINUSE, EADDRNOTAVAIL) is skipped for the next one.

Prints one line per connection on stdout: `PORT CONNECT_S STATUS` (STATUS is
the HTTP status, or `failed:<error>`).

Exit codes: 0 every connection got an answer, 1 usage error, 2 a connection
failed (it stops after the third failure).
"""

import argparse
import errno
import socket
import ssl
import sys
import time


def one(addr, name, ctx, port, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(timeout)
    try:
        s.bind(("", port))
        t0 = time.monotonic()
        s.connect((addr, 443))
        connect_s = time.monotonic() - t0
    except OSError:
        s.close()
        raise
    with ctx.wrap_socket(s, server_hostname=name) as t:
        t.sendall(b"GET / HTTP/1.1\r\nHost: " + name.encode() + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            try:
                chunk = t.recv(65536)
            except ssl.SSLZeroReturnError:
                break
            if not chunk:
                break
            data += chunk
    status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "failed:no-response"
    return connect_s, status


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("addr")
    ap.add_argument("name")
    ap.add_argument("cafile")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--ports", required=True, help="FIRST-LAST")
    ap.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args()
    try:
        first, last = (int(p) for p in a.ports.split("-"))
    except ValueError:
        ap.error("--ports: FIRST-LAST")
    ports = list(range(first, last + 1))
    ctx = ssl.create_default_context(cafile=a.cafile)
    failures = 0
    i = 0
    for _ in range(a.count):
        for _attempt in range(2000):
            port = ports[i % len(ports)]
            i += 1
            try:
                connect_s, status = one(a.addr, a.name, ctx, port, a.timeout)
                break
            except OSError as e:
                if e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    time.sleep(0.001)
                    continue
                connect_s, status = 0.0, "failed:" + str(e).replace(" ", "_")
                break
        else:
            connect_s, status = 0.0, "failed:no-free-port"
        print(f"{port} {connect_s:.6f} {status}", flush=True)
        if status != "200":
            failures += 1
            if failures >= 3:
                print("giving up after 3 failures", file=sys.stderr)
                break
    return 2 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
