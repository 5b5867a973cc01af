# The Xen backend.  libfmxenpv.a is its pure part (PV page types, page-table
# normalisation, record bodies): no Xen header, always built and unit-tested.
# libfmxen.a is the backend proper, built only when the Xen libraries are
# found (configure: HAVE_XEN).
noinst_LIBRARIES += stream/domain/xen/libfmxenpv.a
stream_domain_xen_libfmxenpv_a_SOURCES = \
	stream/domain/xen/pv_abi.hpp stream/domain/xen/bytes.hpp \
	stream/domain/xen/pv_frames.hpp stream/domain/xen/pv_frames.cpp \
	stream/domain/xen/pv_page_types.hpp stream/domain/xen/pv_page_types.cpp \
	stream/domain/xen/pv_pagetable.hpp stream/domain/xen/pv_pagetable.cpp \
	stream/domain/xen/pv_records.hpp stream/domain/xen/pv_records.cpp \
	stream/domain/xen/pv_state.hpp stream/domain/xen/pv_state.cpp \
	stream/domain/xen/pv_save_page.hpp stream/domain/xen/pv_save_page.cpp \
	stream/domain/xen/pv_early_tables.hpp stream/domain/xen/pv_early_tables.cpp \
	stream/domain/xen/hvm_abi.hpp \
	stream/domain/xen/hvm_records.hpp stream/domain/xen/hvm_records.cpp \
	stream/domain/xen/hvm_state.hpp stream/domain/xen/hvm_state.cpp \
	stream/domain/xen/hvm_zero_pages.hpp stream/domain/xen/hvm_zero_pages.cpp \
	stream/domain/xen/zero_page_clearer.hpp stream/domain/xen/zero_page_clearer.cpp \
	stream/domain/xen/guest_checks.hpp stream/domain/xen/guest_checks.cpp \
	stream/domain/xen/guest_hints.hpp stream/domain/xen/guest_hints.cpp \
	stream/domain/xen/restore_platform.hpp stream/domain/xen/restore_platform.cpp \
	stream/domain/xen/state_records.hpp stream/domain/xen/state_records.cpp
EXTRA_DIST += stream/domain/xen/README.md

check_PROGRAMS += tests/unit/xen_pv.test
tests_unit_xen_pv_test_SOURCES = tests/unit/test_xen_pv.cpp tests/unit/stream_error_check.hpp
tests_unit_xen_pv_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_xen_pv_test_LDADD = stream/domain/xen/libfmxenpv.a $(UNIT_LDADD)
TESTS += tests/unit/xen_pv.test

check_PROGRAMS += tests/unit/zero_page_clearer.test
tests_unit_zero_page_clearer_test_SOURCES = tests/unit/test_zero_page_clearer.cpp
tests_unit_zero_page_clearer_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_zero_page_clearer_test_LDADD = stream/domain/xen/libfmxenpv.a $(UNIT_LDADD)
TESTS += tests/unit/zero_page_clearer.test

check_PROGRAMS += tests/unit/guest_hints.test
tests_unit_guest_hints_test_SOURCES = tests/unit/test_guest_hints.cpp
tests_unit_guest_hints_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_guest_hints_test_LDADD = stream/domain/xen/libfmxenpv.a $(UNIT_LDADD)
TESTS += tests/unit/guest_hints.test

check_PROGRAMS += tests/unit/restore_platform.test
tests_unit_restore_platform_test_SOURCES = tests/unit/test_restore_platform.cpp
tests_unit_restore_platform_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_restore_platform_test_LDADD = stream/domain/xen/libfmxenpv.a $(UNIT_LDADD)
TESTS += tests/unit/restore_platform.test

check_PROGRAMS += tests/unit/xen_hvm.test
tests_unit_xen_hvm_test_SOURCES = tests/unit/test_xen_hvm.cpp tests/unit/stream_error_check.hpp
tests_unit_xen_hvm_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_xen_hvm_test_LDADD = stream/domain/xen/libfmxenpv.a $(UNIT_LDADD)
TESTS += tests/unit/xen_hvm.test

if HAVE_XEN
noinst_LIBRARIES += stream/domain/xen/libfmxen.a
stream_domain_xen_libfmxen_a_CPPFLAGS = $(AM_CPPFLAGS) $(XEN_CFLAGS)
# Xen's public headers use GNU extensions (anonymous unions, aligned
# attributes) and refuse strict ISO mode: the last -std wins.
stream_domain_xen_libfmxen_a_CXXFLAGS = $(AM_CXXFLAGS) -std=gnu++20
stream_domain_xen_libfmxen_a_SOURCES = \
	stream/domain/xen/xen_domain.hpp stream/domain/xen/xen_handles.hpp \
	stream/domain/xen/xen_common.cpp stream/domain/xen/xen_abi_check.cpp \
	stream/domain/xen/xen_suspend.hpp stream/domain/xen/xen_suspend.cpp \
	stream/domain/xen/xen_save_domain.hpp stream/domain/xen/xen_save.cpp \
	stream/domain/xen/xen_save_pages.cpp stream/domain/xen/xen_save_free.cpp stream/domain/xen/xen_save_state.cpp \
	stream/domain/xen/xen_restore.cpp \
	stream/domain/xen/xen_restore_domain.hpp stream/domain/xen/xen_restore_end.cpp \
	stream/domain/xen/xen_platform.cpp
# Link order for users (the save helper, the command line):
#   $(FASTMIG_XEN_LIBS) before $(FASTMIG_LIBS).
FASTMIG_XEN_LIBS = stream/domain/xen/libfmxen.a stream/domain/xen/libfmxenpv.a $(FASTMIG_IPC_XEN_LIBS)
else
FASTMIG_XEN_LIBS =
endif

if HAVE_XEN
check_PROGRAMS += tests/unit/xen_backend.test
tests_unit_xen_backend_test_SOURCES = tests/unit/test_xen_backend.cpp
tests_unit_xen_backend_test_CPPFLAGS = $(UNIT_CPPFLAGS) $(XEN_CFLAGS)
# Xen's public headers (through xen_handles.hpp) need GNU mode, as libfmxen.
tests_unit_xen_backend_test_CXXFLAGS = $(AM_CXXFLAGS) -std=gnu++20
tests_unit_xen_backend_test_LDADD = $(FASTMIG_XEN_LIBS) $(UNIT_LDADD)
TESTS += tests/unit/xen_backend.test
endif
