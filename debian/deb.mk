# make deb: the Debian package from the tracked files of this tree (built
# in a clean copy, so this build directory is left alone), into deb-build/,
# for the Debian release of this host (debian/suite-changelog.sh names it:
# fastmig_VERSION+deb12_amd64.deb on Debian 12).
# make deb-check: install it in a Debian 12 chroot and remove it again
# (tests/deb/chroot-check.sh; root, debootstrap, cached).
# make deb-trixie: the Debian 13 package (Xen 4.20), built from the
# committed tree (git archive HEAD) in the cached Debian 13 build chroot of
# tests/nested-xen/build-in-trixie.sh, into deb-build/trixie/deb/.
# make deb-check-trixie: install and remove that one in a Debian 13 chroot.
DEB_BUILD_DIR = $(abs_top_builddir)/deb-build
deb:
	rm -rf $(DEB_BUILD_DIR)/fastmig-* $(DEB_BUILD_DIR)/fastmig_* && mkdir -p $(DEB_BUILD_DIR)/fastmig-$(VERSION)
	cd $(abs_top_srcdir) && git ls-files -z | xargs -0 tar -cf - | tar -xf - -C $(DEB_BUILD_DIR)/fastmig-$(VERSION)
	cd $(DEB_BUILD_DIR)/fastmig-$(VERSION) && sh debian/suite-changelog.sh && dpkg-buildpackage -us -uc -b
	@ls -l $(DEB_BUILD_DIR)/*.deb
# The built tree's fastmig reads the chroot from outside (before install,
# after removal), so it is built first.
deb-check: deb fastmig$(EXEEXT)
	FASTMIG_BIN=$(abs_top_builddir)/fastmig$(EXEEXT) $(SHELL) $(abs_top_srcdir)/tests/deb/chroot-check.sh $(DEB_BUILD_DIR)/fastmig_$(VERSION)+deb*_amd64.deb
deb-trixie:
	FASTMIG_TRIXIE_DEB=only nice bash $(abs_top_srcdir)/tests/nested-xen/build-in-trixie.sh $(DEB_BUILD_DIR)/trixie
deb-check-trixie: fastmig$(EXEEXT)
	FASTMIG_BIN=$(abs_top_builddir)/fastmig$(EXEEXT) FASTMIG_DEB_SUITE=trixie $(SHELL) $(abs_top_srcdir)/tests/deb/chroot-check.sh $(DEB_BUILD_DIR)/trixie/deb/fastmig_$(VERSION)+deb13_amd64.deb
.PHONY: deb deb-check deb-trixie deb-check-trixie
EXTRA_DIST += debian tests/deb/chroot-check.sh
