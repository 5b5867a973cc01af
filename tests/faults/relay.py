#!/usr/bin/env python3
"""A TCP relay that damages a fastmig stream on purpose (fault matrix).

Runs inside the destination's network namespace, between `fastmig send` and
`fastmig receive`.  Every connection is relayed both ways; only the first one
(channel 0, which carries the HEADER) is altered, in the source-to-destination
direction:

  --flip OFFSET      XOR one byte at that stream offset with 0x5a: the kind of
                     damage a 16-bit TCP checksum lets through.  The record
                     CRC-32C must catch it.
  --version N        rewrite the version field of the HEADER record and fix the
                     record's CRC, so the receiver sees a well-formed stream
                     from a source that speaks another version.
  --delay-ms MS      hold every chunk that long before forwarding it (added
                     latency in both directions; the kernel here has no netem).

Prints "port=N" on stdout once it listens.  Stops when killed.
"""
import argparse
import socket
import struct
import sys
import threading
import time

MAGIC_LEN = 8          # "FMIG\r\nS\0"
RECORD_HEADER = 16     # type, length, crc, reserved


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


class Mutator:
    """Alters the source-to-destination bytes of channel 0."""

    def __init__(self, args):
        self.flip = args.flip
        self.version = args.version
        self.offset = 0           # stream bytes seen so far
        self.head = b""           # buffered start of the stream (version rewrite)
        self.head_done = args.version is None

    def __call__(self, data):
        if not self.head_done:
            self.head += data
            if len(self.head) < MAGIC_LEN + RECORD_HEADER:
                return b""
            length = struct.unpack_from("<I", self.head, MAGIC_LEN + 4)[0]
            end = MAGIC_LEN + RECORD_HEADER + length
            if len(self.head) < end:
                return b""
            rec = bytearray(self.head[MAGIC_LEN:end])
            struct.pack_into("<I", rec, RECORD_HEADER, self.version)
            struct.pack_into("<I", rec, 8, 0)
            struct.pack_into("<I", rec, 8, crc32c(bytes(rec)))
            data = self.head[:MAGIC_LEN] + bytes(rec) + self.head[end:]
            self.head_done = True
        if self.flip is not None and self.offset <= self.flip < self.offset + len(data):
            b = bytearray(data)
            b[self.flip - self.offset] ^= 0x5A
            data = bytes(b)
            print("relay: flipped the byte at offset %d" % self.flip, file=sys.stderr, flush=True)
        self.offset += len(data)
        return data


def pump(src, dst, mutate, delay):
    """Copies src to dst.  With a delay, a second thread forwards each chunk
    once it is `delay` old: latency without a cap on throughput."""
    q = []
    cv = threading.Condition()

    def forward():
        try:
            while True:
                with cv:
                    while not q:
                        cv.wait()
                    due, data = q.pop(0)
                if data is None:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                dst.sendall(data)
        except OSError:
            pass
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass

    t = threading.Thread(target=forward, daemon=True)
    t.start()
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if mutate:
                data = mutate(data)
            if data:
                with cv:
                    q.append((time.monotonic() + delay, data))
                    cv.notify()
    except OSError:
        pass
    with cv:
        q.append((0, None))
        cv.notify()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True, help="address to listen on (port 0)")
    ap.add_argument("--to", required=True, help="HOST:PORT of the receiver")
    ap.add_argument("--flip", type=int)
    ap.add_argument("--version", type=int)
    ap.add_argument("--delay-ms", type=float, default=0)
    args = ap.parse_args()
    host, port = args.to.rsplit(":", 1)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.listen, 0))
    ls.listen(16)
    print("port=%d" % ls.getsockname()[1], flush=True)
    first = True
    while True:
        c, _ = ls.accept()
        u = socket.create_connection((host, int(port)))
        for s in (c, u):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mutate = Mutator(args) if first and (args.flip is not None or args.version is not None) else None
        first = False
        delay = args.delay_ms / 1000.0
        threading.Thread(target=pump, args=(c, u, mutate, delay), daemon=True).start()
        threading.Thread(target=pump, args=(u, c, None, delay), daemon=True).start()


if __name__ == "__main__":
    main()
