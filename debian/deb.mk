# make deb: the Debian package from the tracked files of this tree (built
# in a clean copy, so this build directory is left alone), into deb-build/.
# make deb-check: install it in a Debian 12 chroot and remove it again
# (tests/deb/chroot-check.sh; root, debootstrap, cached).
DEB_BUILD_DIR = $(abs_top_builddir)/deb-build
deb:
	rm -rf $(DEB_BUILD_DIR) && mkdir -p $(DEB_BUILD_DIR)/fastmig-$(VERSION)
	cd $(abs_top_srcdir) && git ls-files -z | xargs -0 tar -cf - | tar -xf - -C $(DEB_BUILD_DIR)/fastmig-$(VERSION)
	cd $(DEB_BUILD_DIR)/fastmig-$(VERSION) && dpkg-buildpackage -us -uc -b
	@ls -l $(DEB_BUILD_DIR)/*.deb
deb-check: deb
	$(SHELL) $(abs_top_srcdir)/tests/deb/chroot-check.sh $(DEB_BUILD_DIR)/fastmig_$(VERSION)_amd64.deb
.PHONY: deb deb-check
EXTRA_DIST += debian tests/deb/chroot-check.sh
