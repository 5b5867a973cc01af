#!/usr/bin/env python3
# A stand-in for the stock emu-manager (and its xenguest) in the
# fastmig-emu-manager tests: records its argv in $FAKE_STOCK_LOG, then plays
# emu-manager's part of the protocol with a libxc body.  On restore it reads
# the body from its very first byte (the 8 bytes 0xff of libxc's image
# header) up to and including its END record, record by record, and never
# a byte more: if fastmig had consumed any of it, this fails.
import os, struct, sys

log = open(os.environ["FAKE_STOCK_LOG"], "a")
args = sys.argv[1:]
log.write("argv " + " ".join(args) + "\n")
opt = {args[i].lstrip("-"): args[i + 1] for i in range(0, len(args) - 1, 2)}
out, inp, fd = int(opt["controloutfd"]), int(opt["controlinfd"]), int(opt["fd"])

def line_out(s):
    os.write(out, (s + "\n").encode())

def line_in():
    b = b""
    while not b.endswith(b"\n"):
        c = os.read(inp, 1)
        if not c:
            raise SystemExit("stock: control pipe closed")
        b += c
    return b[:-1].decode()

def read_exact(n):
    b = b""
    while len(b) < n:
        c = os.read(fd, n - len(b))
        if not c:
            line_out("error:stock truncated body")
            raise SystemExit(2)
        b += c
    return b

if opt["mode"] in ("restore", "hvm_restore"):
    first = line_in()
    log.write("control " + first + "\n")
    ihdr = read_exact(24)
    log.write("body-starts " + ihdr[:12].hex() + "\n")
    if ihdr[:8] != b"\xff" * 8 or ihdr[8:12] != b"XENF":
        line_out("error:stock not a libxc stream")
        sys.exit(2)
    read_exact(16)
    n = 40
    while True:
        rtype, rlen = struct.unpack("<II", read_exact(8))
        read_exact((rlen + 7) & ~7)
        n += 8 + ((rlen + 7) & ~7)
        if rtype == 0:
            break
    log.write("body-read %d bytes up to END\n" % n)
    line_out("result:xenguest 7 8")
else:
    line_out("suspend:")
    log.write("control " + line_in() + "\n")
    line_out("prepare:xenguest")
    log.write("control " + line_in() + "\n")
    body = b"\xff" * 8 + b"XENF" + struct.pack(">IH6x", 3, 1) + struct.pack("<IHHII", 3, 12, 0, 4, 17)
    body += struct.pack("<II", 0, 0)
    os.write(fd, body)
    log.write("body-written %d bytes\n" % len(body))
    line_out("result:0 0")
sys.exit(0)
