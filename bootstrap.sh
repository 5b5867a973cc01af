#!/bin/sh
# One command from a fresh Debian 12 (as root) to a built fastmig:
#   ./bootstrap.sh demo   install what is missing, build, run `fastmig demo`
#   ./bootstrap.sh check  install what is missing, build, run the test suite
#   ./bootstrap.sh build  install what is missing and build
# Extra arguments after `demo` are passed to `fastmig demo`.
set -eu
cd "$(dirname "$0")"
mode=${1:-build}
[ $# -gt 0 ] && shift

# Debian packages the build and the tests need.  libxen-dev is optional for
# the build (the Xen backend is skipped without it) but installed so that the
# Xen backend is always compiled and tested where it can be.  nftables: the
# fault matrix's stalled and lossy links; clang and libclang-rt-14-dev: the
# libFuzzer part of the fuzz check (skipped, not failed, without them).
PACKAGES="build-essential autoconf automake libtool pkg-config zlib1g-dev libisal-dev nettle-dev \
libboost-test-dev libxen-dev python3 iproute2 procps nftables clang libclang-rt-14-dev"

missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing Debian packages:$missing" >&2
    echo "bootstrap: run as root, or: sudo apt-get install$missing" >&2
    exit 1
  fi
  echo "bootstrap: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing
fi

jobs=$(nproc 2>/dev/null || echo 2)
if [ ! -x configure ] || [ configure.ac -nt configure ]; then
  autoreconf -fi
fi
if [ ! -f Makefile ] || [ configure -nt Makefile ]; then
  ./configure --quiet
fi
make -j"$jobs" --no-print-directory

case $mode in
  build) ;;
  demo) exec ./fastmig demo "$@" ;;
  check)
    status=0
    make -j"$jobs" --no-print-directory check || status=$?
    # The closing line CI reads sums every test case of every suite.
    tests/summary.sh . || status=1
    exit $status ;;
  *) echo "usage: $0 [build|demo|check] [fastmig demo options]" >&2; exit 2 ;;
esac
