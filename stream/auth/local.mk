# Authenticated and encrypted channels (stream/auth/auth.hpp;
# docs/stream-format.md, Authentication and Encryption): part of the
# engine's library, the one part that needs nettle.  The writer and reader
# they key (stream/wire_writer.hpp, stream/wire.hpp) know nothing of it.
stream_libfmstream_a_SOURCES += \
	stream/auth/auth.hpp stream/auth/suite.hpp \
	stream/auth/key.cpp \
	stream/auth/record_mac.cpp \
	stream/auth/aead.cpp \
	stream/auth/handshake.cpp
stream_libfmstream_a_CPPFLAGS += $(NETTLE_CFLAGS)
FASTMIG_LIBS += $(NETTLE_LIBS)
