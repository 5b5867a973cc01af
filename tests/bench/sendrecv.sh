#!/bin/bash
# sendrecv.sh MEM WORKLOAD PORT [send options...]: one migration over the
# netns link with `fastmig send` in fmbench-src and `fastmig receive` in
# fmbench-dst (the fallback of run-bench.sh for a demo without namespace
# options).  Its own private sim directory, cleaned up on exit; prints the
# sender's JSON last.  The link must be up (netns-link.sh up RATE).
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
sendrecv "$@"
