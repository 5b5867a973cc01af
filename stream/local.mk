# The engine.  No Xen header may be included from here.
noinst_LIBRARIES += stream/libfmstream.a
stream_libfmstream_a_CPPFLAGS = $(AM_CPPFLAGS) $(ISAL_CFLAGS) $(ZLIB_CFLAGS)
stream_libfmstream_a_SOURCES = \
	stream/types.hpp stream/types.cpp \
	stream/bytes.hpp \
	stream/failpoint.hpp stream/failpoint.cpp \
	stream/clock.hpp \
	stream/dirty_bitmap.hpp \
	stream/domain.hpp \
	stream/wire.hpp stream/wire_internal.hpp stream/wire.cpp stream/wire_batch.cpp stream/wire_channels.cpp \
	stream/wire_writer.hpp stream/wire_writer.cpp \
	stream/checksum.hpp stream/checksum.cpp \
	stream/transport.hpp stream/transport.cpp \
	stream/spawn.hpp stream/spawn.cpp \
	stream/precopy_policy.hpp stream/precopy_policy.cpp \
	stream/bounded_queue.hpp stream/token_bucket.hpp stream/page_memory.hpp stream/first_error.hpp \
	stream/page_encoder.hpp stream/page_encoder.cpp \
	stream/send_pipeline.hpp stream/send_pipeline.cpp \
	stream/sender.hpp stream/sender_internal.hpp stream/sender.cpp stream/send_opening.cpp stream/send_commit.cpp \
	stream/domain_checksums.cpp \
	stream/batch_applier.hpp stream/page_applier.hpp stream/page_applier.cpp \
	stream/tail_timer.hpp \
	stream/receiver.hpp stream/receiver_internal.hpp stream/receiver.cpp stream/receive_records.cpp

FASTMIG_LIBS = stream/domain/sim/libfmsim.a evtchn-ipc/libfmipc.a stream/libfmstream.a stream/codec/libfmcodec.a \
	$(ISAL_LIBS) $(ZLIB_LIBS)
