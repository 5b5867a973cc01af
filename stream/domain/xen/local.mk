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
	stream/domain/xen/pv_save_page.hpp stream/domain/xen/pv_save_page.cpp
EXTRA_DIST += stream/domain/xen/README.md

check_PROGRAMS += tests/unit/xen_pv.test
tests_unit_xen_pv_test_SOURCES = tests/unit/test_xen_pv.cpp tests/unit/stream_error_check.hpp
tests_unit_xen_pv_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_unit_xen_pv_test_LDADD = stream/domain/xen/libfmxenpv.a $(UNIT_LDADD)
TESTS += tests/unit/xen_pv.test
