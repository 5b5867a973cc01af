# The libxl-save-helper drop-in, driven by a fake libxl end through its
# pipes (no Xen needed): tests/libxl-helper/helper.sh, status.sh.
check_PROGRAMS += tests/libxl-helper/fake_libxl
tests_libxl_helper_fake_libxl_SOURCES = tests/libxl-helper/fake_libxl.cpp
tests_libxl_helper_fake_libxl_LDADD = $(FASTMIG_LIBS)
TESTS += tests/libxl-helper/helper.sh tests/libxl-helper/status.sh
EXTRA_DIST += tests/libxl-helper/helper.sh tests/libxl-helper/status.sh
