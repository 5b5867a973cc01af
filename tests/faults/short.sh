#!/bin/sh
# The short fault matrix for `make check`: the most telling cases, once each
# (20 s idle, under 60 s loaded).  TAP; SKIPs without root, nft or network namespaces.
# The long matrix is `make faults` (tests/faults/README.md).
exec python3 "$(dirname "$0")/faults.py" --short
