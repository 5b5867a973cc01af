# The libxl-save-helper drop-in, driven by a fake libxl end through its
# pipes (no Xen needed): tests/libxl-helper/helper.sh, status.sh.
check_PROGRAMS += tests/libxl-helper/fake_libxl
tests_libxl_helper_fake_libxl_SOURCES = tests/libxl-helper/fake_libxl.cpp tests/libxl-helper/read_exact.hpp
tests_libxl_helper_fake_libxl_LDADD = $(FASTMIG_LIBS)
TESTS += tests/libxl-helper/helper.sh tests/libxl-helper/status.sh tests/libxl-helper/peers.sh
EXTRA_DIST += tests/libxl-helper/helper.sh tests/libxl-helper/status.sh tests/libxl-helper/peers.sh

check_PROGRAMS += tests/libxl-helper/libxl_msgs.test
tests_libxl_helper_libxl_msgs_test_SOURCES = tests/libxl-helper/test_libxl_msgs.cpp
tests_libxl_helper_libxl_msgs_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_libxl_helper_libxl_msgs_test_LDADD = libxl-plugin/libfmhelper.a libxl-plugin/libfmcli.a $(UNIT_LDADD)
TESTS += tests/libxl-helper/libxl_msgs.test

check_PROGRAMS += tests/libxl-helper/one_way.test
tests_libxl_helper_one_way_test_SOURCES = tests/libxl-helper/test_one_way.cpp tests/unit/fake_domain.hpp
tests_libxl_helper_one_way_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_libxl_helper_one_way_test_LDADD = $(UNIT_LDADD)
TESTS += tests/libxl-helper/one_way.test

# The helper's Xen adapter, without a hypervisor (Xen builds only).
if HAVE_XEN
check_PROGRAMS += tests/libxl-helper/xen_adapter.test
tests_libxl_helper_xen_adapter_test_SOURCES = tests/libxl-helper/test_xen_adapter.cpp
tests_libxl_helper_xen_adapter_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_libxl_helper_xen_adapter_test_LDADD = libxl-plugin/libfmhelper.a libxl-plugin/libfmcli.a \
	$(FASTMIG_XEN_LIBS) $(UNIT_LDADD)
TESTS += tests/libxl-helper/xen_adapter.test
endif

# Xen's own helper, played for the tests of the hand-over to it.
check_PROGRAMS += tests/libxl-helper/fake_stock_helper
tests_libxl_helper_fake_stock_helper_SOURCES = tests/libxl-helper/fake_stock_helper.cpp tests/libxl-helper/read_exact.hpp

check_PROGRAMS += tests/libxl-helper/stock_fallback.test
tests_libxl_helper_stock_fallback_test_SOURCES = tests/libxl-helper/test_stock_fallback.cpp
tests_libxl_helper_stock_fallback_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_libxl_helper_stock_fallback_test_LDADD = libxl-plugin/libfmhelper.a libxl-plugin/libfmcli.a $(UNIT_LDADD)
TESTS += tests/libxl-helper/stock_fallback.test

check_PROGRAMS += tests/libxl-helper/peers.test
tests_libxl_helper_peers_test_SOURCES = tests/libxl-helper/test_peers.cpp
tests_libxl_helper_peers_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_libxl_helper_peers_test_LDADD = libxl-plugin/libfmcli.a $(UNIT_LDADD)
TESTS += tests/libxl-helper/peers.test

# Streams recorded by earlier builds (tests/data/streams/) stay readable.
TESTS += tests/libxl-helper/old_streams.sh
EXTRA_DIST += tests/libxl-helper/old_streams.sh tests/data/streams/README.md tests/data/streams/manifest \
	tests/data/streams/v2-sim-save.img.gz tests/data/streams/v2-sim-live.img.gz
