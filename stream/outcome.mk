# Resolving a lost COMMIT (docs/stream-format.md): the destination's
# outcome records, the records that ask and answer, the source's reconnect.
stream_libfmstream_a_SOURCES += stream/wire_outcome.hpp stream/wire_outcome.cpp \
	stream/outcome_store.hpp stream/outcome_store.cpp stream/reconnect.hpp stream/reconnect.cpp

check_PROGRAMS += tests/unit/outcome_store.test
tests_unit_outcome_store_test_SOURCES = tests/unit/test_outcome_store.cpp tests/unit/temp_dir.hpp
tests_unit_outcome_store_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_outcome_store_test_LDADD = $(UNIT_LDADD)
TESTS += tests/unit/outcome_store.test

check_PROGRAMS += tests/unit/outcome_resolve.test
tests_unit_outcome_resolve_test_SOURCES = tests/unit/test_outcome_resolve.cpp tests/unit/fake_domain.hpp tests/unit/temp_dir.hpp
tests_unit_outcome_resolve_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_outcome_resolve_test_LDADD = $(UNIT_LDADD)
TESTS += tests/unit/outcome_resolve.test
