#!/bin/sh
# Builds the libFuzzer targets with clang and runs them (tests/fuzz/README.md).
#
#   fuzz.sh usable                  exit 0 if clang can build a libFuzzer
#                                   binary with ASan+UBSan here
#   fuzz.sh build                   build $work/bin/fuzz-TARGET (incremental)
#   fuzz.sh run TARGET RUNS SECS    fuzz one target for RUNS executions
#                                   (0: no limit) or SECS seconds (0: no
#                                   limit), print one line of figures
#   fuzz.sh all                     build, run every target with FUZZ_RUNS_X
#                                   / FUZZ_TIME, print the table
#
# Environment: top_srcdir, builddir (default: the current directory), CXX_FUZZ
# (default clang++), FUZZ_JOBS (parallel compiles and targets, default 1),
# FUZZ_RUNS_WIRE, FUZZ_RUNS_CODEC, FUZZ_RUNS_RECEIVER, FUZZ_RUNS_SENDER, FUZZ_RUNS_HINTS
# (executions per target), FUZZ_TIME (seconds per target, 0 = until the
# runs are done), FUZZ_NICE (niceness, default 10).
# Seeds come from make-seeds (tests/fuzz/make-seeds, built by automake) and
# tests/fuzz/regressions/TARGET; the corpus grows in $rundir/corpus/TARGET,
# crash inputs go to $rundir/crashes/TARGET, logs to $rundir/TARGET.log,
# where rundir is FUZZ_RUN_DIR (default $work; make check uses its own).
set -u
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
builddir=${builddir:-$(pwd)}
work=$builddir/tests/fuzz/work
rundir=${FUZZ_RUN_DIR:-$work}
CXX_FUZZ=${CXX_FUZZ:-clang++}
FUZZ_JOBS=${FUZZ_JOBS:-1}
FUZZ_NICE=${FUZZ_NICE:-10}
targets="wire codec receiver sender xenstate outcome hints"

san="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
cxxflags="-std=c++20 -O1 -g -fno-omit-frame-pointer $san -I$top_srcdir -I$builddir -D_GNU_SOURCE -pthread"
libs="-lisal -lz $(pkg-config --libs nettle 2>/dev/null || echo -lnettle) -pthread"

# The engine sources the targets need (no Xen, no sim backend).
engine="stream/types.cpp stream/failpoint.cpp stream/wire.cpp stream/wire_batch.cpp stream/wire_channels.cpp stream/checksum.cpp
        stream/page_encoder.cpp stream/transport.cpp stream/precopy_policy.cpp stream/send_pipeline.cpp
        stream/sender.cpp stream/send_opening.cpp stream/send_commit.cpp stream/domain_checksums.cpp
        stream/receiver.cpp stream/receive_records.cpp stream/page_applier.cpp
        stream/codec/deflate.cpp stream/codec/xbzrle.cpp
        stream/codec/page_cache.cpp stream/codec/policy.cpp
        stream/auth/key.cpp stream/auth/record_mac.cpp stream/auth/aead.cpp stream/auth/handshake.cpp stream/wire_writer.cpp
        stream/domain/xen/pv_frames.cpp stream/domain/xen/pv_page_types.cpp stream/domain/xen/pv_pagetable.cpp
        stream/domain/xen/pv_records.cpp stream/domain/xen/pv_state.cpp stream/domain/xen/hvm_records.cpp
        stream/domain/xen/hvm_state.cpp stream/domain/xen/state_records.cpp stream/domain/xen/restore_platform.cpp
        stream/wire_outcome.cpp stream/outcome_store.cpp stream/reconnect.cpp
        evtchn-ipc/free_hints.cpp evtchn-ipc/hint_session.cpp"

# Input size limits per target (bytes): the seeds' size, with room to grow.
max_len() {
  case $1 in
    wire) echo 65536 ;; codec) echo 70000 ;; receiver) echo 131072 ;; sender) echo 4096 ;; xenstate) echo 65536 ;; outcome) echo 8192 ;; hints) echo 65536 ;;
  esac
}

usable() {
  command -v "$CXX_FUZZ" >/dev/null 2>&1 || return 1
  d=$(mktemp -d) || return 1
  printf '%s\n' '#include <cstdint>' '#include <cstddef>' \
    'extern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }' >"$d/t.cpp"
  $CXX_FUZZ -std=c++20 $san -fsanitize=fuzzer "$d/t.cpp" -o "$d/t" >/dev/null 2>&1 && "$d/t" -runs=1 >/dev/null 2>&1
  st=$?
  rm -rf "$d"
  return $st
}

# Compiles $1 (a source path relative to top_srcdir) into $work/obj/ when the
# object is missing or older than the source or any engine header.
compile() {
  src=$1 extra=-fsanitize=fuzzer-no-link
  obj=$work/obj/$(echo "$src" | sed 's,/,_,g; s,\.cpp$,.o,')
  if test -f "$obj" && test "$obj" -nt "$top_srcdir/$src" &&
     test -z "$(find "$top_srcdir/stream" "$top_srcdir/evtchn-ipc" "$top_srcdir/tests/fuzz" -name '*.hpp' -newer "$obj" 2>/dev/null | head -1)"; then
    return 0
  fi
  echo "  CXX(fuzz) $src"
  $CXX_FUZZ $cxxflags $extra -c "$top_srcdir/$src" -o "$obj.tmp" && mv "$obj.tmp" "$obj"
}

build() {
  mkdir -p "$work/obj" "$work/bin"
  # The engine is instrumented for coverage (fuzzer-no-link) like the
  # targets; FUZZ_JOBS compiles at a time.
  for s in $engine; do echo "$s"; done >"$work/sources"
  for t in $targets; do echo "tests/fuzz/fuzz_$t.cpp"; done >>"$work/sources"
  xargs -P "$FUZZ_JOBS" -n 1 sh "$0" compile <"$work/sources" || return 1
  objs=
  for s in $engine; do objs="$objs $work/obj/$(echo "$s" | sed 's,/,_,g; s,\.cpp$,.o,')"; done
  for t in $targets; do
    o=$work/obj/tests_fuzz_fuzz_$t.o
    test -f "$o" || { echo "fuzz.sh: $o was not built" >&2; return 1; }
    bin=$work/bin/fuzz-$t
    if ! test -f "$bin" || test -n "$(find $objs "$o" -newer "$bin" | head -1)"; then
      echo "  LD(fuzz) fuzz-$t"
      $CXX_FUZZ $cxxflags -fsanitize=fuzzer "$o" $objs $libs -o "$bin" || return 1
    fi
  done
}

seeds() {
  if ! test -d "$work/seeds/wire"; then
    "$builddir/tests/fuzz/make-seeds" "$work/seeds" >/dev/null || return 1
  fi
}

# run TARGET RUNS SECS: prints "TARGET execs=N cov=N ft=N corpus=N crashes=N secs=N"
run() {
  t=$1 runs=$2 secs=$3
  seeds || return 1
  mkdir -p "$rundir/corpus/$t" "$rundir/crashes/$t"
  log=$rundir/$t.log
  regress=
  test -d "$top_srcdir/tests/fuzz/regressions/$t" && regress=$top_srcdir/tests/fuzz/regressions/$t
  start=$(date +%s)
  # Unbounded allocation is a finding: any single malloc above 64 MiB or an
  # RSS above 512 MiB ends the run with a report.  Leak checking is off: a
  # target that throws mid-way on purpose is not a leak, and the engine's
  # objects are all RAII (the sanitizer builds of the suite check leaks).
  # A small quarantine and short malloc stacks: ~20% more executions.
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=0:quarantine_size_mb=16:malloc_context_size=8 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  nice -n "$FUZZ_NICE" "$work/bin/fuzz-$t" \
    -rss_limit_mb=512 -malloc_limit_mb=64 -timeout=20 -max_len="$(max_len "$t")" \
    -runs="$(test "$runs" -gt 0 && echo "$runs" || echo -1)" -max_total_time="$secs" \
    -print_final_stats=1 -artifact_prefix="$rundir/crashes/$t/" \
    "$rundir/corpus/$t" "$work/seeds/$t" $regress >"$log" 2>&1
  st=$?
  end=$(date +%s)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: ' | tail -1)
  cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
  ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
  corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\).*/\1/p')
  # After a crash libFuzzer prints no final stats: its last status line.
  test -n "$execs" || execs=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed 's/^#\([0-9]*\).*/\1/')
  crashes=$(ls "$rundir/crashes/$t" 2>/dev/null | wc -l)
  echo "$t execs=${execs:-0} cov=${cov:-?} ft=${ft:-?} corpus=${corp:-?} crashes=$crashes secs=$((end - start)) status=$st"
  if test "$st" -ne 0; then
    echo "fuzz.sh: fuzz-$t failed (status $st); its log: $log" >&2
    grep -E 'ERROR|FUZZ INVARIANT|SUMMARY|Test unit written' "$log" | head -8 >&2
    return 1
  fi
}

all() {
  usable || { echo "fuzz.sh: $CXX_FUZZ cannot build libFuzzer targets with ASan/UBSan (Debian: clang libclang-rt-14-dev)" >&2; return 1; }
  build || return 1
  : "${FUZZ_TIME:=0}"
  res=$rundir/results.txt
  : >"$res"
  st=0
  pids=
  for t in $targets; do
    eval "r=\${FUZZ_RUNS_$(echo $t | tr a-z A-Z):-}"
    case $t in
      wire) : "${r:=4000000}" ;; codec) : "${r:=4000000}" ;; receiver) : "${r:=1500000}" ;; sender) : "${r:=500000}" ;;
      xenstate) : "${r:=2000000}" ;;
      outcome) : "${r:=200000}" ;;
      hints) : "${r:=2000000}" ;;
    esac
    if test "$FUZZ_JOBS" -gt 1; then
      (run "$t" "$r" "$FUZZ_TIME" >>"$res") &
      pids="$pids $!"
    else
      run "$t" "$r" "$FUZZ_TIME" >>"$res" || st=1
    fi
  done
  for p in $pids; do wait "$p" || st=1; done
  total=0
  printf '%-10s %12s %8s %8s %8s %8s %8s\n' target executions cov ft corpus crashes seconds
  while read -r t e c f co cr s rest; do
    e=${e#execs=}; total=$((total + e))
    printf '%-10s %12s %8s %8s %8s %8s %8s\n' "$t" "$e" "${c#cov=}" "${f#ft=}" "${co#corpus=}" "${cr#crashes=}" "${s#secs=}"
  done <"$res"
  printf '%-10s %12s\n' total "$total"
  return $st
}

cmd=${1:-all}
shift 2>/dev/null || true
case $cmd in
  usable) usable ;;
  build) build ;;
  compile) compile "$@" ;;
  run) run "$@" ;;
  all) all ;;
  *) echo "usage: $0 usable|build|run TARGET RUNS SECS|all" >&2; exit 2 ;;
esac
