# fastmig-emu-manager, driven through its pipes by a fake xenopsd that
# writes and reads the suspend image's framing (no Xen needed):
# tests/xapi/emu_manager.sh.
check_PROGRAMS += tests/xapi/fake_xenopsd
tests_xapi_fake_xenopsd_SOURCES = tests/xapi/fake_xenopsd.cpp tests/xapi/fake_xenopsd_host.hpp
tests_xapi_fake_xenopsd_LDADD = $(FASTMIG_LIBS)
TESTS += tests/xapi/emu_manager.sh tests/xapi/status.sh
EXTRA_DIST += tests/xapi/emu_manager.sh tests/xapi/status.sh tests/xapi/fake_stock_emu_manager.py

# The same fake on real Xen domains (xen_host.cpp: xenopsd's build_pre,
# build_post, suspend), for the nested-Xen harness (make nested-xapi,
# tests/nested-xen/job/xapi.sh); built here, run there only.
if HAVE_XEN
check_PROGRAMS += tests/xapi/fake_xenopsd_xen
tests_xapi_fake_xenopsd_xen_SOURCES = tests/xapi/fake_xenopsd.cpp tests/xapi/fake_xenopsd_host.hpp tests/xapi/xen_host.cpp
tests_xapi_fake_xenopsd_xen_CPPFLAGS = $(AM_CPPFLAGS) $(XEN_CFLAGS) -DFAKE_XENOPSD_XEN
tests_xapi_fake_xenopsd_xen_CXXFLAGS = $(AM_CXXFLAGS) -std=gnu++20
tests_xapi_fake_xenopsd_xen_LDADD = $(FASTMIG_LIBS) $(XEN_LIBS)
endif

# Its argv parser, peeking and control-line channel, without a xenopsd.
check_PROGRAMS += tests/xapi/emu_parts.test
tests_xapi_emu_parts_test_SOURCES = tests/xapi/test_emu_parts.cpp
tests_xapi_emu_parts_test_CPPFLAGS = $(UNIT_CPPFLAGS)
tests_xapi_emu_parts_test_LDADD = libxl-plugin/libfmemu.a libxl-plugin/libfmhelper.a libxl-plugin/libfmcli.a $(UNIT_LDADD)
TESTS += tests/xapi/emu_parts.test
