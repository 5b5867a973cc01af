# Page codecs: deflate groups (ISA-L igzip, zlib), XBZRLE, selective compression.
noinst_LIBRARIES += stream/codec/libfmcodec.a
stream_codec_libfmcodec_a_CPPFLAGS = $(AM_CPPFLAGS) $(ISAL_CFLAGS) $(ZLIB_CFLAGS)
stream_codec_libfmcodec_a_SOURCES = \
	stream/codec/codec.hpp \
	stream/codec/deflate.cpp \
	stream/codec/xbzrle.cpp \
	stream/codec/page_cache.cpp \
	stream/codec/policy.cpp
