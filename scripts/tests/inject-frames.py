#!/usr/bin/env python3
"""inject-frames.py - send the frames of a pcap file raw on an interface.

Usage: inject-frames.py IFACE PCAP [--pps N]

Reads a classic pcap file (libpcap format, either byte order, microsecond or
nanosecond timestamps, Ethernet link type) and sends each record's bytes
unchanged with an AF_PACKET/SOCK_RAW socket bound to IFACE, paced at N frames
per second (default 2000) so that nothing is lost on the way. Timestamps in the
file are ignored. Prints the number of frames sent on stdout.

The lab tests run it inside the client namespace of scripts/lab.sh:
    ip netns exec P-client inject-frames.py P-c0 frames.pcap --pps 2000

Exit codes: 0 all frames sent, 1 usage error, 2 bad capture file or send failure.
"""

import argparse
import errno
import socket
import struct
import sys
import time

MAGICS = {
    0xA1B2C3D4: False,  # microseconds
    0xA1B23C4D: True,  # nanoseconds
}
LINKTYPE_ETHERNET = 1
MAX_RECORD = 262144


def read_frames(path):
    """Yields the frames of a classic pcap file; raises ValueError if damaged."""
    with open(path, "rb") as f:
        header = f.read(24)
        if len(header) != 24:
            raise ValueError(f"{path}: shorter than a pcap header")
        for endian in ("<", ">"):
            (magic,) = struct.unpack(endian + "I", header[:4])
            if magic in MAGICS:
                break
        else:
            raise ValueError(f"{path}: not a classic pcap file (magic {header[:4].hex()})")
        linktype = struct.unpack(endian + "I", header[20:24])[0] & 0x0FFFFFFF
        if linktype != LINKTYPE_ETHERNET:
            raise ValueError(f"{path}: link type {linktype} is not Ethernet")
        offset = 24
        while True:
            rec = f.read(16)
            if not rec:
                return
            if len(rec) != 16:
                raise ValueError(f"{path}: truncated record header at byte {offset}")
            _sec, _frac, incl, _orig = struct.unpack(endian + "IIII", rec)
            if incl > MAX_RECORD:
                raise ValueError(f"{path}: record at byte {offset} claims {incl} bytes")
            data = f.read(incl)
            if len(data) != incl:
                raise ValueError(f"{path}: truncated record at byte {offset}")
            offset += 16 + incl
            yield data


def send_all(sock, frame):
    """Sends one frame, retrying briefly while the device queue is full."""
    for _ in range(200):
        try:
            n = sock.send(frame)
        except OSError as e:
            if e.errno in (errno.ENOBUFS, errno.EAGAIN):
                time.sleep(0.001)
                continue
            raise
        if n != len(frame):
            raise OSError(f"short send: {n} of {len(frame)} bytes")
        return
    raise OSError("device queue stayed full for 200 ms")


def main():
    p = argparse.ArgumentParser(description="Send the frames of a pcap file raw on an interface.")
    p.add_argument("iface")
    p.add_argument("pcap")
    p.add_argument("--pps", type=float, default=2000.0, help="frames per second (default 2000)")
    args = p.parse_args()
    if args.pps <= 0:
        p.error("--pps must be positive")

    try:
        frames = list(read_frames(args.pcap))
    except (OSError, ValueError) as e:
        print(f"inject-frames.py: {e}", file=sys.stderr)
        return 2

    sent = 0
    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
            sock.bind((args.iface, 0))
            interval = 1.0 / args.pps
            start = time.monotonic()
            for i, frame in enumerate(frames):
                due = start + i * interval
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                send_all(sock, frame)
                sent += 1
    except OSError as e:
        print(f"inject-frames.py: {args.iface}: after {sent} frames: {e}", file=sys.stderr)
        print(sent)
        return 2
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
