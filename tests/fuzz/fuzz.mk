# Fuzzing of every parser that reads bytes from the network (issue 5,
# "Hostile input"; tests/fuzz/README.md).
#
# `make check` runs tests/fuzz/check-fuzz.sh: seeds, g++ replay drivers
# (below) over seeds + regressions + deterministic mutations, and a few
# seconds of each libFuzzer target when clang is usable.
# `make fuzz` is the long run: clang + libFuzzer + ASan/UBSan, at least 10^7
# executions in all (FUZZ_RUNS_WIRE, FUZZ_RUNS_CODEC, FUZZ_RUNS_RECEIVER,
# FUZZ_RUNS_SENDER, FUZZ_RUNS_HINTS, FUZZ_TIME, FUZZ_JOBS: see tests/fuzz/fuzz.sh).
FUZZ_REPLAY_SOURCES = tests/fuzz/replay_main.cpp tests/fuzz/fuzz_common.hpp tests/fuzz/fuzz_sealed.hpp
check_PROGRAMS += tests/fuzz/make-seeds tests/fuzz/fuzz-wire-replay tests/fuzz/fuzz-codec-replay \
	tests/fuzz/fuzz-receiver-replay tests/fuzz/fuzz-sender-replay tests/fuzz/fuzz-xenstate-replay tests/fuzz/fuzz-outcome-replay tests/fuzz/fuzz-hints-replay
tests_fuzz_make_seeds_SOURCES = tests/fuzz/make_seeds.cpp tests/unit/iovec_bytes.hpp
tests_fuzz_make_seeds_LDADD = stream/domain/xen/libfmxenpv.a $(FASTMIG_LIBS)
tests_fuzz_fuzz_wire_replay_SOURCES = tests/fuzz/fuzz_wire.cpp $(FUZZ_REPLAY_SOURCES)
tests_fuzz_fuzz_wire_replay_LDADD = $(FASTMIG_LIBS)
tests_fuzz_fuzz_codec_replay_SOURCES = tests/fuzz/fuzz_codec.cpp $(FUZZ_REPLAY_SOURCES)
tests_fuzz_fuzz_codec_replay_LDADD = $(FASTMIG_LIBS)
tests_fuzz_fuzz_receiver_replay_SOURCES = tests/fuzz/fuzz_receiver.cpp $(FUZZ_REPLAY_SOURCES)
tests_fuzz_fuzz_receiver_replay_LDADD = $(FASTMIG_LIBS)
tests_fuzz_fuzz_sender_replay_SOURCES = tests/fuzz/fuzz_sender.cpp $(FUZZ_REPLAY_SOURCES)
tests_fuzz_fuzz_sender_replay_LDADD = $(FASTMIG_LIBS)
tests_fuzz_fuzz_xenstate_replay_SOURCES = tests/fuzz/fuzz_xenstate.cpp $(FUZZ_REPLAY_SOURCES)
tests_fuzz_fuzz_xenstate_replay_LDADD = stream/domain/xen/libfmxenpv.a $(FASTMIG_LIBS)
tests_fuzz_fuzz_outcome_replay_SOURCES = tests/fuzz/fuzz_outcome.cpp $(FUZZ_REPLAY_SOURCES)
tests_fuzz_fuzz_outcome_replay_LDADD = $(FASTMIG_LIBS)
tests_fuzz_fuzz_hints_replay_SOURCES = tests/fuzz/fuzz_hints.cpp $(FUZZ_REPLAY_SOURCES)
tests_fuzz_fuzz_hints_replay_LDADD = $(FASTMIG_LIBS)
TESTS += tests/fuzz/check-fuzz.sh
EXTRA_DIST += tests/fuzz/README.md tests/fuzz/fuzz.mk tests/fuzz/fuzz.sh tests/fuzz/check-fuzz.sh \
	tests/fuzz/regressions

FUZZ_ENV = top_srcdir='$(abs_top_srcdir)' builddir='$(abs_top_builddir)'
fuzz: tests/fuzz/make-seeds$(EXEEXT)
	$(FUZZ_ENV) $(SHELL) $(top_srcdir)/tests/fuzz/fuzz.sh all
# The clang objects, binaries, grown corpora and crash artifacts.
fuzz-clean:
	rm -rf tests/fuzz/work
.PHONY: fuzz fuzz-clean
