# Tests.  Unit tests are Boost.Test programs run through tests/boost-driver.sh,
# which reports one result per test case; integration tests are TAP scripts.
TEST_EXTENSIONS = .test .sh
TEST_LOG_DRIVER = $(SHELL) $(top_srcdir)/tests/boost-driver.sh
SH_LOG_DRIVER = env AM_TAP_AWK='$(AWK)' $(SHELL) $(top_srcdir)/build-aux/tap-driver.sh
AM_TESTS_ENVIRONMENT = FASTMIG_BIN='$(abs_top_builddir)/fastmig'; export FASTMIG_BIN; \
	top_srcdir='$(abs_top_srcdir)'; export top_srcdir;

UNIT_LDADD = $(FASTMIG_LIBS) $(BOOST_TEST_LIBS)
UNIT_CPPFLAGS = $(AM_CPPFLAGS) -DBOOST_TEST_DYN_LINK

check_PROGRAMS += tests/unit/wire.test
tests_unit_wire_test_SOURCES = tests/unit/test_wire.cpp tests/unit/stream_error_check.hpp tests/unit/iovec_bytes.hpp
tests_unit_wire_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_wire_test_LDADD = $(UNIT_LDADD)
TESTS += tests/unit/wire.test

EXTRA_DIST += tests/boost-driver.sh

check_PROGRAMS += tests/unit/policy.test tests/unit/engine.test tests/unit/commit.test
tests_unit_policy_test_SOURCES = tests/unit/test_policy.cpp
tests_unit_policy_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_policy_test_LDADD = $(UNIT_LDADD)
tests_unit_engine_test_SOURCES = tests/unit/test_engine.cpp tests/unit/fake_domain.hpp tests/unit/migrate_pairs.hpp tests/unit/iovec_bytes.hpp
tests_unit_engine_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_engine_test_LDADD = $(UNIT_LDADD)
tests_unit_commit_test_SOURCES = tests/unit/test_commit.cpp tests/unit/fake_domain.hpp
tests_unit_commit_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_commit_test_LDADD = $(UNIT_LDADD)
TESTS += tests/unit/policy.test tests/unit/engine.test tests/unit/commit.test

check_PROGRAMS += tests/unit/slow_batch_log.test
tests_unit_slow_batch_log_test_SOURCES = tests/unit/test_slow_batch_log.cpp
tests_unit_slow_batch_log_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_slow_batch_log_test_LDADD = $(UNIT_LDADD)
TESTS += tests/unit/slow_batch_log.test

check_PROGRAMS += tests/unit/first_error.test
tests_unit_first_error_test_SOURCES = tests/unit/test_first_error.cpp
tests_unit_first_error_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_first_error_test_LDADD = $(UNIT_LDADD)
TESTS += tests/unit/first_error.test

# Integration tests (TAP): the real fastmig binary, sim domains in their own
# processes, loopback TCP only.
TESTS += tests/integration/cli.sh tests/integration/demo-workloads.sh
EXTRA_DIST += tests/integration/lib.sh tests/integration/cli.sh tests/integration/demo-workloads.sh \
	tests/summary.sh tests/sanitize.sh bootstrap.sh

# The simulated domain and evtchn-ipc.  sim.test starts sim processes through
# $FASTMIG_BIN (the real fastmig under `make check`); sim_serve_main is a
# stand-in that only runs `sim serve`, for running sim.test by hand without
# the command line: FASTMIG_BIN=tests/unit/sim_serve_main tests/unit/sim.test
check_PROGRAMS += tests/unit/sim.test tests/unit/ipc.test tests/unit/sim_serve_main
tests_unit_sim_test_SOURCES = tests/unit/test_sim.cpp
tests_unit_sim_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_sim_test_LDADD = $(UNIT_LDADD)
tests_unit_ipc_test_SOURCES = tests/unit/test_ipc.cpp
tests_unit_ipc_test_CPPFLAGS = $(UNIT_CPPFLAGS)
# libfmipc.a first: it needs stream/types.o from libfmstream.a, which
# FASTMIG_LIBS lists before it.
tests_unit_ipc_test_LDADD = evtchn-ipc/libfmipc.a $(UNIT_LDADD)
tests_unit_sim_serve_main_SOURCES = tests/unit/sim_serve_main.cpp
tests_unit_sim_serve_main_LDADD = $(FASTMIG_LIBS)
TESTS += tests/unit/sim.test tests/unit/ipc.test

# The free-page hint protocol and its mailbox ends (evtchn-ipc/README.md).
check_PROGRAMS += tests/unit/free_hints.test
tests_unit_free_hints_test_SOURCES = tests/unit/test_free_hints.cpp
tests_unit_free_hints_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_free_hints_test_LDADD = evtchn-ipc/libfmipc.a $(UNIT_LDADD)
TESTS += tests/unit/free_hints.test
# fastmig-guest-agent's page scan (guest-agent/, built on its own by its
# Makefile; its pure part is tested here).
check_PROGRAMS += tests/unit/guest_agent.test
tests_unit_guest_agent_test_SOURCES = tests/unit/test_guest_agent.cpp guest-agent/free_pages.hpp guest-agent/free_pages.cpp \
	guest-agent/xenbus_watch.hpp guest-agent/xenbus_watch.cpp tests/unit/xs_wire_fake.hpp
tests_unit_guest_agent_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_guest_agent_test_LDADD = evtchn-ipc/libfmipc.a $(UNIT_LDADD)
TESTS += tests/unit/guest_agent.test
if HAVE_XEN
# The agent itself, linked dynamically for the test (its Makefile makes
# the static binary a guest gets).
check_PROGRAMS += tests/integration/fastmig-guest-agent
tests_integration_fastmig_guest_agent_SOURCES = guest-agent/agent_main.cpp guest-agent/free_pages.cpp guest-agent/xenbus_watch.cpp
tests_integration_fastmig_guest_agent_CPPFLAGS = $(AM_CPPFLAGS) $(XEN_CFLAGS)
tests_integration_fastmig_guest_agent_CXXFLAGS = $(AM_CXXFLAGS) -std=gnu++20
tests_integration_fastmig_guest_agent_LDADD = $(FASTMIG_IPC_XEN_LIBS)
TESTS += tests/integration/guest-agent.sh
# Why the agent's watch is its own: libxenstore.a (what the static agent
# links) against the same fake as the agent's watch.
check_PROGRAMS += tests/unit/xenstore_watch.test
tests_unit_xenstore_watch_test_SOURCES = tests/unit/test_xenstore_watch.cpp guest-agent/xenbus_watch.cpp tests/unit/xs_wire_fake.hpp
tests_unit_xenstore_watch_test_CPPFLAGS = $(UNIT_CPPFLAGS) $(XEN_CFLAGS)
tests_unit_xenstore_watch_test_LDADD = $(XENSTORE_STATIC_LIBS) $(BOOST_TEST_LIBS)
TESTS += tests/unit/xenstore_watch.test
check_PROGRAMS += tests/unit/xen_channel.test
tests_unit_xen_channel_test_SOURCES = tests/unit/test_xen_channel.cpp
tests_unit_xen_channel_test_CPPFLAGS = $(UNIT_CPPFLAGS) $(XEN_CFLAGS)
tests_unit_xen_channel_test_CXXFLAGS = $(AM_CXXFLAGS) -std=gnu++20
tests_unit_xen_channel_test_LDADD = $(FASTMIG_IPC_XEN_LIBS) $(UNIT_LDADD)
TESTS += tests/unit/xen_channel.test
else
EXTRA_DIST += tests/unit/test_xen_channel.cpp tests/unit/test_xenstore_watch.cpp
endif
EXTRA_DIST += tests/integration/guest-agent.sh

# Page codecs (stream/codec/): deflate groups, XBZRLE, page cache, policy.
check_PROGRAMS += tests/unit/codec.test
tests_unit_codec_test_SOURCES = tests/unit/test_codec.cpp tests/unit/stream_error_check.hpp
tests_unit_codec_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_codec_test_LDADD = $(UNIT_LDADD)
TESTS += tests/unit/codec.test

# Starting a helper that reports on a pipe (stream/spawn.hpp).
check_PROGRAMS += tests/unit/spawn.test
tests_unit_spawn_test_SOURCES = tests/unit/test_spawn.cpp
tests_unit_spawn_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_spawn_test_LDADD = $(UNIT_LDADD)
TESTS += tests/unit/spawn.test

# Authenticated channels (stream/auth/; docs/stream-format.md,
# Authentication and Encryption).
check_PROGRAMS += tests/unit/auth.test
tests_unit_auth_test_SOURCES = tests/unit/test_auth.cpp tests/unit/fake_domain.hpp tests/unit/migrate_pairs.hpp
tests_unit_auth_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_auth_test_LDADD = $(UNIT_LDADD)
check_PROGRAMS += tests/unit/aead.test
tests_unit_aead_test_SOURCES = tests/unit/test_aead.cpp tests/unit/fake_domain.hpp tests/unit/migrate_pairs.hpp
tests_unit_aead_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_aead_test_LDADD = $(UNIT_LDADD)
TESTS += tests/unit/auth.test tests/unit/aead.test tests/integration/auth.sh
EXTRA_DIST += tests/integration/auth.sh

# Codec micro-benchmark: not built by default nor by `make check`;
# `make bench-codec` builds and runs it (BENCH_CODEC_ARGS=--quick for a
# short run).
EXTRA_PROGRAMS = tests/bench/codec-bench
tests_bench_codec_bench_SOURCES = tests/bench/codec_bench.cpp
tests_bench_codec_bench_CPPFLAGS = $(AM_CPPFLAGS) $(ISAL_CFLAGS)
tests_bench_codec_bench_LDADD = $(FASTMIG_LIBS)
CLEANFILES += tests/bench/codec-bench$(EXEEXT)
BENCH_CODEC_ARGS =
bench-codec: tests/bench/codec-bench$(EXEEXT)
	./tests/bench/codec-bench$(EXEEXT) $(BENCH_CODEC_ARGS)
.PHONY: bench-codec

# How an incoming sim guest should get its memory (issue 16): pwrite into
# holes vs populated up front vs through a mapping.  `make bench-guest-memory`
# (BENCH_GUEST_MEMORY_ARGS='--mib 256 --repeat 3' for a short run).
EXTRA_PROGRAMS += tests/bench/guest-memory-bench
tests_bench_guest_memory_bench_SOURCES = tests/bench/guest_memory_bench.cpp
tests_bench_guest_memory_bench_LDADD = -lpthread
CLEANFILES += tests/bench/guest-memory-bench$(EXEEXT)
BENCH_GUEST_MEMORY_ARGS =
bench-guest-memory: tests/bench/guest-memory-bench$(EXEEXT)
	./tests/bench/guest-memory-bench$(EXEEXT) $(BENCH_GUEST_MEMORY_ARGS)
.PHONY: bench-guest-memory
