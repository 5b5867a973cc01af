# Authenticated channels (stream/auth.hpp; docs/stream-format.md,
# Authentication).  Included last: it extends FASTMIG_LIBS and
# EXTRA_PROGRAMS, which other local.mk files define.
stream_libfmstream_a_SOURCES += stream/auth.hpp stream/auth_key.cpp stream/auth_record.cpp stream/auth_aead.cpp stream/auth_handshake.cpp stream/auth_suite.hpp
stream_libfmstream_a_CPPFLAGS += $(NETTLE_CFLAGS)
FASTMIG_LIBS += $(NETTLE_LIBS)

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
