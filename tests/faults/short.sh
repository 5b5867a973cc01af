#!/bin/sh
# The short fault matrix for `make check`: the most telling cases, once each
# (about 20 s).  TAP; SKIPs without root, nft or network namespaces.
# The long matrix is `make faults` (tests/faults/README.md).
exec python3 "$(dirname "$0")/faults.py" --short
