#!/usr/bin/env python3
"""A hostile (or merely unusual) SFTP v3 server for Ferry's sftp tests.

Run as the forced command of a test key: `hostile_sftp.py MODE_FILE`. The
mode file holds `<mode> <size>`; every path is reported as a regular file
of <size> bytes whose content is byte (offset % 251). Modes:

  endless     READ never says EOF: the file is longer than it claims (SF-01)
  overlong    READ answers with more bytes than asked for
  hugepacket  READ answers with a 2 GiB packet length
  stall       READ is never answered (SF-02)
  short       EOF at half the claimed size
  shortreads  honest, but answers at most 1000 bytes per READ
  drip        answers every READ with one byte, 50 ms after it came
  cut         honest up to half the size (the read that crosses it comes
              back short; reads beyond it are never answered); the read
              of the rest at exactly half, which the client only sends
              once it has taken in the first half, kills the server
"""

import os
import signal
import struct
import sys
import time

mode, size = open(sys.argv[1]).read().split()
size = int(size)
inp, out = sys.stdin.buffer, sys.stdout.buffer


def read_exact(n):
    b = b""
    while len(b) < n:
        c = inp.read(n - len(b))
        if not c:
            sys.exit(0)
        b += c
    return b


def send(t, payload):
    out.write(struct.pack(">IB", len(payload) + 1, t) + payload)
    out.flush()


def string(b):
    return struct.pack(">I", len(b)) + b


def attrs():
    # SIZE | PERMISSIONS, regular file 0644
    return struct.pack(">IQI", 0x1 | 0x4, size, 0o100644)


PATTERN = bytes(range(251))


def content(offset, n):
    start = offset % 251
    return (PATTERN * ((start + n) // 251 + 1))[start : start + n]


while True:
    length, t = struct.unpack(">IB", read_exact(5))
    body = read_exact(length - 1)
    if t == 1:  # INIT
        send(2, struct.pack(">I", 3))
        continue
    (rid,) = struct.unpack(">I", body[:4])
    ident = struct.pack(">I", rid)
    if t in (7, 8, 17):  # LSTAT, FSTAT, STAT
        send(105, ident + attrs())
    elif t == 3:  # OPEN
        send(102, ident + string(b"h"))
    elif t == 4:  # CLOSE
        send(101, ident + struct.pack(">I", 0) + string(b"ok") + string(b""))
    elif t == 5:  # READ
        (hlen,) = struct.unpack(">I", body[4:8])
        offset, n = struct.unpack(">QI", body[8 + hlen : 8 + hlen + 12])
        end = size // 2 if mode == "short" else size
        if mode == "stall":
            continue
        if mode == "cut":
            if offset == size // 2:
                os.kill(os.getpid(), signal.SIGKILL)
            if offset > size // 2:
                continue
            end = size // 2
        if mode == "drip":
            time.sleep(0.05)
            n = 1
        if mode == "hugepacket":
            out.write(struct.pack(">IBI", 0x7FFFFFFF, 103, rid))
            out.flush()
            continue
        if mode == "overlong":
            n += 10
        elif mode not in ("endless", "drip"):
            if offset >= end:
                send(101, ident + struct.pack(">I", 1) + string(b"EOF") + string(b""))
                continue
            n = min(n, end - offset)
            if mode == "shortreads":
                n = min(n, 1000)
        send(103, ident + string(content(offset, n)))
    else:
        send(101, ident + struct.pack(">I", 8) + string(b"unsupported") + string(b""))
