# nested.mk: make targets of the nested-Xen harness (tests/nested-xen/).
# Included from the top Makefile.am. Not part of `make check`: a full run
# takes tens of minutes under TCG (see tests/nested-xen/README.md). Needs
# root (debootstrap, chroot) and QEMU.
#
#   make nested-image    build or reuse the cached nested Xen host image
#   make nested-check    image + boot + xl save/restore and migrate with the
#                        stock helper and, in a build with the Xen libraries,
#                        this build's fastmig helper, side by side;
#                        NESTED_ARGS passes job parameters, e.g.
#                        make nested-check NESTED_ARGS='SIZES=512 RUNS=1'
#   make nested-xapi     the XenServer drop-in on nested Xen (job/xapi.sh):
#                        fake_xenopsd_xen migrates a PVH guest live through
#                        fastmig-emu-manager RUNS (5) times in a row;
#                        NESTED_ARGS as for nested-check
#   make nested-trixie-build  build this commit for Xen 4.20 in a cached
#                        Debian 13 chroot and run its make check there
#                        (build-in-trixie.sh); the nested 4.20 image then
#                        takes it: FASTMIG_NESTED_SUITE=trixie (README.md)
#   make nested-xen-shadow  the trixie image's Xen 4.20 rebuilt with shadow
#                        paging (build-xen-shadow.sh; needs FASTMIG_XEN_GIT
#                        when Debian's source package cannot be fetched) and
#                        print its directory; a run boots it with
#                        FASTMIG_NESTED_XEN=<dir> (README.md, "Xen 4.20")
#   make nested-libxl    build Debian's libxenlight with xen-patches/*.patch
#                        (xen-patches/build-libxl.sh) and print its path;
#                        give it to a run as FASTMIG_LIBXL_SO=<path>
# Cache: $(FASTMIG_NESTED_CACHE), default /var/cache/fastmig-nested.

NESTED_DIR = $(srcdir)/tests/nested-xen
NESTED_ARGS =

EXTRA_DIST += \
	tests/nested-xen/README.md \
	tests/nested-xen/nested.mk \
	tests/nested-xen/build-image.sh \
	tests/nested-xen/build-in-trixie.sh \
	tests/nested-xen/build-xen-shadow.sh \
	tests/nested-xen/make-job.sh \
	tests/nested-xen/boot.sh \
	tests/nested-xen/nested-check.sh \
	tests/nested-xen/summarize.sh \
	tests/nested-xen/kvm-probe.sh \
	tests/nested-xen/dom0/fastmig-dom0-init \
	tests/nested-xen/job/run.sh \
	tests/nested-xen/job/xapi.sh \
	tests/nested-xen/job/xen-up.sh \
	tests/nested-xen/guest/memload.c \
	tests/nested-xen/guest/loadsvc \
	tests/nested-xen/guest/init \
	tests/nested-xen/guest/memwriter.c \
	xen-patches/README.md \
	xen-patches/build-libxl.sh \
	xen-patches/0001-libxl-attach-nics-while-the-stream-is-read.patch

.PHONY: nested-image nested-check nested-libxl nested-trixie-build nested-xapi nested-xen-shadow

nested-image:
	bash $(NESTED_DIR)/build-image.sh

nested-trixie-build:
	bash $(NESTED_DIR)/build-in-trixie.sh

nested-xen-shadow:
	bash $(NESTED_DIR)/build-xen-shadow.sh

nested-libxl:
	bash $(srcdir)/xen-patches/build-libxl.sh

if HAVE_XEN
NESTED_HELPER_DEP = libxl-plugin/libxl-save-helper
NESTED_HELPER = $(abs_builddir)/$(NESTED_HELPER_DEP)
else
NESTED_HELPER_DEP =
NESTED_HELPER =
endif

nested-check: $(NESTED_HELPER_DEP)
	FASTMIG_HELPER_BIN=$${FASTMIG_HELPER_BIN-$(NESTED_HELPER)} \
	  bash $(NESTED_DIR)/nested-check.sh $(NESTED_ARGS)

if HAVE_XEN
nested-xapi: libxl-plugin/fastmig-emu-manager tests/xapi/fake_xenopsd_xen
	FASTMIG_NESTED_JOB=xapi FASTMIG_HELPER_BIN= \
	  FASTMIG_EMU_BIN=$(abs_builddir)/libxl-plugin/fastmig-emu-manager \
	  FASTMIG_FAKE_XENOPSD_BIN=$(abs_builddir)/tests/xapi/fake_xenopsd_xen \
	  bash $(NESTED_DIR)/nested-check.sh $(NESTED_ARGS)
else
nested-xapi:
	@echo "nested-xapi: this build has no Xen backend (configure found no libxen-dev)"; exit 1
endif
