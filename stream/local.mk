# The engine.  No Xen header may be included from here.
noinst_LIBRARIES += stream/libfmstream.a
stream_libfmstream_a_CPPFLAGS = $(AM_CPPFLAGS) $(ISAL_CFLAGS) $(ZLIB_CFLAGS)
stream_libfmstream_a_SOURCES = \
	stream/types.hpp stream/types.cpp \
	stream/clock.hpp \
	stream/dirty_bitmap.hpp \
	stream/domain.hpp \
	stream/wire.hpp stream/wire.cpp \
	stream/classify.hpp stream/classify.cpp \
	stream/transport.hpp stream/transport.cpp \
	stream/precopy_policy.hpp stream/precopy_policy.cpp \
	stream/sender.hpp stream/sender.cpp \
	stream/receiver.hpp stream/receiver.cpp

FASTMIG_LIBS = stream/domain/sim/libfmsim.a evtchn-ipc/libfmipc.a stream/libfmstream.a \
	$(ISAL_LIBS) $(ZLIB_LIBS)
