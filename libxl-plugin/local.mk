# The fastmig command and the libxl-save-helper drop-in (installed under
# $(libexecdir)/fastmig/, where LIBXL_SAVE_HELPER or the dpkg diversion of
# `make install-xl-helper` points libxl).  Both share libfmcli.a.
noinst_LIBRARIES += libxl-plugin/libfmcli.a
libxl_plugin_libfmcli_a_SOURCES = \
	libxl-plugin/cli.hpp libxl-plugin/cli.cpp \
	libxl-plugin/send_options.cpp \
	libxl-plugin/peers.hpp libxl-plugin/peers.cpp

bin_PROGRAMS += fastmig
fastmig_SOURCES = \
	libxl-plugin/fastmig_main.cpp \
	libxl-plugin/report.hpp libxl-plugin/report.cpp \
	libxl-plugin/netns.hpp libxl-plugin/netns.cpp \
	libxl-plugin/migrate_cli.hpp libxl-plugin/migrate_cli.cpp \
	libxl-plugin/cmd_migrate.cpp libxl-plugin/cmd_receive.cpp libxl-plugin/cmd_demo.cpp \
	libxl-plugin/cmd_sim.cpp \
	libxl-plugin/cmd_status.cpp \
	libxl-plugin/status_files.hpp libxl-plugin/status_files.cpp \
	libxl-plugin/status_xenopsd.hpp libxl-plugin/status_xenopsd.cpp
fastmig_LDADD = libxl-plugin/libfmcli.a $(FASTMIG_LIBS)

# The helper's own code, in a library too so unit tests link it.
noinst_LIBRARIES += libxl-plugin/libfmhelper.a
libxl_plugin_libfmhelper_a_SOURCES = \
	libxl-plugin/helper.hpp \
	libxl-plugin/helper_args.hpp libxl-plugin/helper_args.cpp \
	libxl-plugin/libxl_msgs.hpp libxl-plugin/libxl_msgs.cpp \
	libxl-plugin/libxl_link.hpp libxl-plugin/libxl_link.cpp \
	libxl-plugin/helper_backend.hpp libxl-plugin/helper_backend_sim.cpp libxl-plugin/helper_backend_xen.cpp \
	libxl-plugin/helper_save.cpp libxl-plugin/helper_restore.cpp \
	libxl-plugin/caller_suspend.hpp libxl-plugin/nonblocking.hpp \
	libxl-plugin/cancel_signals.hpp libxl-plugin/cancel_signals.cpp \
	libxl-plugin/handover_summary.cpp \
	libxl-plugin/helper_pipe.hpp libxl-plugin/helper_pipe.cpp \
	libxl-plugin/helper_supervisor.hpp libxl-plugin/helper_supervisor.cpp \
	libxl-plugin/stock_fallback.hpp libxl-plugin/stock_fallback.cpp \
	libxl-plugin/helper_stock.hpp libxl-plugin/helper_stock.cpp

fastmighelperdir = $(libexecdir)/fastmig
fastmighelper_PROGRAMS = libxl-plugin/libxl-save-helper
libxl_plugin_libxl_save_helper_SOURCES = libxl-plugin/helper_main.cpp
# The Xen backend (stream/domain/xen/, empty without the Xen libraries) goes
# before the engine it builds on.
libxl_plugin_libxl_save_helper_LDADD = libxl-plugin/libfmhelper.a libxl-plugin/libfmcli.a \
	$(FASTMIG_XEN_LIBS) $(FASTMIG_LIBS)
EXTRA_DIST += libxl-plugin/xl-helper-divert.sh

# fastmig-emu-manager: the drop-in for XenServer/XCP-ng's emu-manager
# (docs/emu-manager.md), on the helper's engine, backends and one-way stream.
# Its code in a library too, so unit tests link it.
noinst_LIBRARIES += libxl-plugin/libfmemu.a
libxl_plugin_libfmemu_a_SOURCES = \
	libxl-plugin/emu.hpp \
	libxl-plugin/emu_args.hpp libxl-plugin/emu_args.cpp \
	libxl-plugin/emu_config.hpp libxl-plugin/emu_config.cpp \
	libxl-plugin/fd_peek.hpp libxl-plugin/fd_peek.cpp \
	libxl-plugin/xenopsd_link.hpp libxl-plugin/xenopsd_link.cpp \
	libxl-plugin/qmp_dirty_log.hpp libxl-plugin/qmp_dirty_log.cpp \
	libxl-plugin/restore_progress.hpp libxl-plugin/restore_progress.cpp \
	libxl-plugin/emu_save.cpp libxl-plugin/emu_restore.cpp
fastmighelper_PROGRAMS += libxl-plugin/fastmig-emu-manager
libxl_plugin_fastmig_emu_manager_SOURCES = libxl-plugin/emu_main.cpp
libxl_plugin_fastmig_emu_manager_LDADD = libxl-plugin/libfmemu.a $(libxl_plugin_libxl_save_helper_LDADD)

# `fastmig status` names the helper libxl runs and whether it is fastmig's.
fastmig_CPPFLAGS = $(AM_CPPFLAGS) -DFASTMIG_HELPER_PATH='"$(fastmighelperdir)/libxl-save-helper"' \
	-DFASTMIG_EMU_MANAGER_PATH='"$(fastmighelperdir)/fastmig-emu-manager"'

# make install-xl-helper / uninstall-xl-helper: divert Xen's stock helper to
# fastmig's (dpkg-divert --rename, a symlink in its place) and back.  See
# README.md, "xl save, restore and migrate through fastmig".  XEN_LIBEXEC
# comes from configure (--with-xen-libexec).
XL_HELPER_ROOT =
install-xl-helper: install-fastmighelperPROGRAMS
	$(SHELL) $(srcdir)/libxl-plugin/xl-helper-divert.sh install "$(XL_HELPER_ROOT)" \
	  "$(XEN_LIBEXEC)/libxl-save-helper" "$(fastmighelperdir)/libxl-save-helper"
uninstall-xl-helper:
	$(SHELL) $(srcdir)/libxl-plugin/xl-helper-divert.sh uninstall "$(XL_HELPER_ROOT)" \
	  "$(XEN_LIBEXEC)/libxl-save-helper" "$(fastmighelperdir)/libxl-save-helper"
.PHONY: install-xl-helper uninstall-xl-helper

# make install-xapi-emu-manager / uninstall-xapi-emu-manager: fastmig's
# emu-manager as the XAPI alternative `fastmig` (a VM's
# platform:emu-manager=fastmig picks it; the global emu-manager= switch in
# /etc/xenopsd.conf.d/ is the administrator's, see README.md, "XenServer /
# XCP-ng").  DESTDIR-aware: the symlink names the installed program.
XAPI_ALTERNATIVES = /usr/lib/xapi/alternatives
install-xapi-emu-manager: install-fastmighelperPROGRAMS
	$(MKDIR_P) "$(DESTDIR)$(XAPI_ALTERNATIVES)/emu-manager"
	ln -sfn "$(fastmighelperdir)/fastmig-emu-manager" "$(DESTDIR)$(XAPI_ALTERNATIVES)/emu-manager/fastmig"
uninstall-xapi-emu-manager:
	rm -f "$(DESTDIR)$(XAPI_ALTERNATIVES)/emu-manager/fastmig"
.PHONY: install-xapi-emu-manager uninstall-xapi-emu-manager
