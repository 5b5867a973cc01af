# evtchn-ipc: shared-memory regions and doorbells (process flavour: memfd +
# eventfd + SCM_RIGHTS; Xen flavour: grant pages + an inter-domain event
# channel, built only with the Xen libraries) and the free-page hint
# protocol that runs over either (evtchn-ipc/README.md).
noinst_LIBRARIES += evtchn-ipc/libfmipc.a
evtchn_ipc_libfmipc_a_SOURCES = \
	evtchn-ipc/doorbell.hpp evtchn-ipc/doorbell.cpp \
	evtchn-ipc/shared_region.hpp evtchn-ipc/shared_region.cpp \
	evtchn-ipc/fd_passing.hpp evtchn-ipc/fd_passing.cpp \
	evtchn-ipc/free_hints.hpp evtchn-ipc/free_hints.cpp \
	evtchn-ipc/hint_session.hpp evtchn-ipc/hint_session.cpp
EXTRA_DIST += evtchn-ipc/README.md

# The Xen flavour (grant pages + an inter-domain event channel), only with
# the Xen libraries.  Users link $(FASTMIG_IPC_XEN_LIBS) before
# $(FASTMIG_LIBS) (the Xen backend: in $(FASTMIG_XEN_LIBS)).
if HAVE_XEN
noinst_LIBRARIES += evtchn-ipc/libfmipcxen.a
evtchn_ipc_libfmipcxen_a_CPPFLAGS = $(AM_CPPFLAGS) $(XEN_CFLAGS)
# Xen's public headers need GNU extensions (see stream/domain/xen/local.mk).
evtchn_ipc_libfmipcxen_a_CXXFLAGS = $(AM_CXXFLAGS) -std=gnu++20
evtchn_ipc_libfmipcxen_a_SOURCES = evtchn-ipc/xen_channel.hpp evtchn-ipc/xen_channel.cpp
FASTMIG_IPC_XEN_LIBS = evtchn-ipc/libfmipcxen.a evtchn-ipc/libfmipc.a $(XEN_LIBS)
# dom0's end of the hint protocol alone, to try a guest's agent by hand or
# from the nested harness (not installed).
check_PROGRAMS += evtchn-ipc/fastmig-hint-probe
evtchn_ipc_fastmig_hint_probe_SOURCES = evtchn-ipc/hint_probe_main.cpp
evtchn_ipc_fastmig_hint_probe_CPPFLAGS = $(AM_CPPFLAGS) $(XEN_CFLAGS)
evtchn_ipc_fastmig_hint_probe_CXXFLAGS = $(AM_CXXFLAGS) -std=gnu++20
evtchn_ipc_fastmig_hint_probe_LDADD = $(FASTMIG_IPC_XEN_LIBS)
else
FASTMIG_IPC_XEN_LIBS =
EXTRA_DIST += evtchn-ipc/xen_channel.hpp evtchn-ipc/xen_channel.cpp evtchn-ipc/hint_probe_main.cpp
endif
