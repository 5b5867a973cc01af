# fastmig-emu-manager, driven through its pipes by a fake xenopsd that
# writes and reads the suspend image's framing (no Xen needed):
# tests/xapi/emu_manager.sh.
check_PROGRAMS += tests/xapi/fake_xenopsd
tests_xapi_fake_xenopsd_SOURCES = tests/xapi/fake_xenopsd.cpp
tests_xapi_fake_xenopsd_LDADD = $(FASTMIG_LIBS)
TESTS += tests/xapi/emu_manager.sh tests/xapi/status.sh
EXTRA_DIST += tests/xapi/emu_manager.sh tests/xapi/status.sh tests/xapi/fake_stock_emu_manager.py
