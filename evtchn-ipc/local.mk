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
