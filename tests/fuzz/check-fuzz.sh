#!/bin/sh
# The short fuzzing run of `make check` (TAP; tests/fuzz/README.md):
#  1. seeds are generated with the project's encoders (make-seeds);
#  2. every target's g++-built replay driver runs the seeds, the saved
#     reproducers of fixed bugs (tests/fuzz/regressions/TARGET) and a fixed
#     set of deterministic mutations of each: any crash, abort or (in the
#     sanitizer builds of the suite) sanitizer report fails the test;
#  3. when clang with libFuzzer works here, the libFuzzer targets (ASan +
#     UBSan) are built (incrementally, as `make fuzz` does) and each runs
#     for FUZZ_CHECK_SECS seconds (default 4); otherwise these are skipped
#     with the reason.  FUZZ_CHECK=replay skips them on purpose.
set -u
: "${top_srcdir:?top_srcdir must be set (make check sets it)}"
builddir=$(pwd)
fuzzdir=$builddir/tests/fuzz
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fastmig-fuzz.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
targets="wire codec receiver sender xenstate outcome hints"
n=0
failed=0

report() { # report STATUS DESCRIPTION LOG
  n=$((n + 1))
  if test "$1" -eq 0; then
    echo "ok $n - $2"
  else
    echo "not ok $n - $2"
    tail -n 25 "$3" | sed 's/^/# /'
    failed=1
  fi
}

# Mutations per seed: what fits a few seconds per target without sanitizers.
mutations() {
  case $1 in wire) echo 2000 ;; codec) echo 300 ;; receiver) echo 60 ;; sender) echo 8 ;; xenstate) echo 2000 ;; outcome) echo 100 ;; hints) echo 1000 ;; esac
}

"$fuzzdir/make-seeds" "$tmp/seeds" >"$tmp/seeds.log" 2>&1
st=$?
test "$st" -eq 0 && test -n "$(ls "$tmp/seeds/receiver" 2>/dev/null)" || st=1
report $st "seed corpora built with the project's encoders" "$tmp/seeds.log"

for t in $targets; do
  "$fuzzdir/fuzz-$t-replay" --mutations "$(mutations $t)" \
    "$tmp/seeds/$t" "$top_srcdir/tests/fuzz/regressions/$t" >"$tmp/$t.log" 2>&1
  st=$?
  report $st "replay $t: seeds, regressions, $(mutations $t) mutations each ($(tail -n 1 "$tmp/$t.log"))" "$tmp/$t.log"
done

skip_all() {
  for t in $targets; do
    n=$((n + 1))
    echo "ok $n - libFuzzer $t # SKIP $1"
  done
}
# Its own corpus, crash and log directory: a `make fuzz` may be running.
fz() { FUZZ_RUN_DIR=$tmp/run top_srcdir=$top_srcdir builddir=$builddir sh "$top_srcdir/tests/fuzz/fuzz.sh" "$@"; }
if test "${FUZZ_CHECK:-auto}" = replay; then
  skip_all "FUZZ_CHECK=replay"
elif ! fz usable; then
  skip_all "clang++ with libFuzzer and ASan/UBSan not usable here (Debian: clang libclang-rt-14-dev)"
elif ! fz build >"$tmp/build.log" 2>&1; then
  report 1 "libFuzzer targets build with clang" "$tmp/build.log"
else
  for t in $targets; do
    fz run "$t" 0 "${FUZZ_CHECK_SECS:-4}" >"$tmp/run-$t.log" 2>&1
    st=$?
    report $st "libFuzzer $t: $(grep "^$t execs" "$tmp/run-$t.log" | cut -d' ' -f2-5)" "$tmp/run-$t.log"
  done
fi
echo "1..$n"
exit 0
