# Benchmarks of issue 4 (tests/bench/README.md).  Not part of `make check`:
# they need root (network namespaces, tc), several GiB of memory and minutes.
# Options go through BENCH_ARGS, e.g.
#   make bench BENCH_ARGS='--quick'
#   make bench BENCH_ARGS='--scenarios idle,dpdk --links 10gbit'
#   make bench-qemu BENCH_ARGS='--scenarios idle --qemu-configs plain,multifd'
# Results land in $(builddir)/bench-results/<timestamp>/ (not committed).
BENCH_ARGS =
BENCH_ENV = builddir='$(abs_top_builddir)' FASTMIG_BIN='$(abs_top_builddir)/fastmig$(EXEEXT)'

bench: fastmig$(EXEEXT)
	$(BENCH_ENV) $(SHELL) $(top_srcdir)/tests/bench/run-bench.sh $(BENCH_ARGS)

bench-quick: fastmig$(EXEEXT)
	$(BENCH_ENV) $(SHELL) $(top_srcdir)/tests/bench/run-bench.sh --quick $(BENCH_ARGS)

bench-ablation: fastmig$(EXEEXT)
	$(BENCH_ENV) $(SHELL) $(top_srcdir)/tests/bench/run-ablation.sh $(BENCH_ARGS)

# MAC throughput on 2 MiB of page data, for the choice of the record tag:
# `make bench-auth` (not built by default nor by `make check`).
EXTRA_PROGRAMS += tests/bench/auth-bench
tests_bench_auth_bench_SOURCES = tests/bench/auth_bench.cpp
tests_bench_auth_bench_CPPFLAGS = $(AM_CPPFLAGS) $(NETTLE_CFLAGS) $(GNUTLS_CFLAGS)
tests_bench_auth_bench_LDADD = $(FASTMIG_LIBS) $(NETTLE_LIBS)
CLEANFILES += tests/bench/auth-bench$(EXEEXT)
bench-auth: tests/bench/auth-bench$(EXEEXT)
	./tests/bench/auth-bench$(EXEEXT)
.PHONY: bench-auth

# Cost of authentication and encryption (run-crypto.sh): no key, --cipher
# none, aes-256-gcm, chacha20-poly1305, interleaved; ratios of medians.
bench-crypto: fastmig$(EXEEXT) tests/bench/auth-bench$(EXEEXT)
	$(BENCH_ENV) $(SHELL) $(top_srcdir)/tests/bench/run-crypto.sh $(BENCH_ARGS)

bench-qemu: fastmig$(EXEEXT)
	$(BENCH_ENV) $(SHELL) $(top_srcdir)/tests/bench/qemu-peer.sh $(BENCH_ARGS)

# Compression policy: default vs --compress none vs --always-compress (issue 16).
bench-policy: fastmig$(EXEEXT)
	$(BENCH_ENV) $(SHELL) $(top_srcdir)/tests/bench/run-policy.sh $(BENCH_ARGS)

# Take the emulated link down if an interrupted run left it up.
bench-link-down:
	$(SHELL) $(top_srcdir)/tests/bench/netns-link.sh down

.PHONY: bench bench-quick bench-ablation bench-crypto bench-policy bench-qemu bench-link-down

EXTRA_DIST += tests/bench/README.md tests/bench/bench.mk tests/bench/bench-lib.sh \
	tests/bench/benchtool.py tests/bench/netns-link.sh tests/bench/run-bench.sh \
	tests/bench/run-ablation.sh tests/bench/run-crypto.sh tests/bench/run-policy.sh tests/bench/qemu-peer.sh tests/bench/sendrecv.sh

# Not hooked to clean-local (Makefile.am owns that rule): run it by hand.
clean-bench:
	-rm -rf bench-results
.PHONY: clean-bench
