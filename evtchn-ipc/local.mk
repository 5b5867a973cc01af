# evtchn-ipc: shared-memory regions and doorbells (process flavour: memfd +
# eventfd + SCM_RIGHTS; Xen flavour: event channels + grant pages, later).
noinst_LIBRARIES += evtchn-ipc/libfmipc.a
evtchn_ipc_libfmipc_a_SOURCES = \
	evtchn-ipc/doorbell.hpp evtchn-ipc/doorbell.cpp \
	evtchn-ipc/shared_region.hpp evtchn-ipc/shared_region.cpp \
	evtchn-ipc/fd_passing.hpp evtchn-ipc/fd_passing.cpp
