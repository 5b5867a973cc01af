#!/bin/sh
# tests/sanitize.sh MODE SRCDIR BUILDROOT: configure SRCDIR (a clean copy of
# the sources) in BUILDROOT/MODE with the sanitizer MODE (asan or tsan),
# build, run `make check`, print the summary line.
set -eu
mode=$1 src=$2 root=$3
case $mode in
  asan) flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined" ;;
  tsan) flags="-fsanitize=thread" ;;
  *) echo "sanitize.sh: unknown mode '$mode' (asan or tsan)" >&2; exit 2 ;;
esac
rm -rf "$root/$mode"
mkdir -p "$root/$mode"
cd "$root/$mode"
"$src/configure" --quiet CXXFLAGS="-O1 -g -fno-omit-frame-pointer $flags" LDFLAGS="$flags"
make -j"$(nproc)" --no-print-directory
# Sanitizer reports fail the test that triggered them.
export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 TSAN_OPTIONS=halt_on_error=1
# Tests that cannot run under a sanitizer (ulimit -v: its shadow memory is
# terabytes of address space) skip themselves when this is set.
export FASTMIG_SANITIZER=$mode
st=0
make -j"$(nproc)" --no-print-directory check || st=$?
"$src/tests/summary.sh" . || st=1
exit $st
