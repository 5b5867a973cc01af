// Deflate groups with ISA-L igzip and zlib, both as raw deflate (RFC 1951,
// no zlib/gzip wrapper): the wire carries no checksum of its own because the
// record CRC already covers the blob, and raw deflate is the format both
// libraries share, so either end may use either library.
//
// Choice of the igzip level.  tests/bench/codec-bench on this machine (2
// cores, AVX-512; ISA-L 2.30), 16 MiB of sim pages per kind, GB/s of page
// data per CPU second, limit = raw size; 16-page groups (1-page groups in
// brackets):
//
//               text               binary             random
//   igzip 0   0.92 (0.68) x4.85   0.68 (0.65) x1.85   0.76 (0.65) x1.00
//   igzip 1   0.80 (0.33) x5.22   0.59 (0.19) x2.10   0.50 (0.22) x1.00
//   igzip 2   0.78 (0.33) x5.27   0.55 (0.19) x2.11   0.47 (0.22) x1.00
//   igzip 3   0.36 (0.23) x5.32   0.36 (0.17) x2.05   0.42 (0.20) x1.00
//   zlib 1    0.17 (0.13) x5.05   0.09 (0.06) x2.08   0.06 (0.09) x1.00
//   inflate (igzip) of level-1 groups: text 1.3 GB/s, binary 0.7 GB/s
//
// Level 1 is the default.  Where compression pays at all (the link slower
// than the compressors: 1 Gbit/s = 0.125 GB/s against 2 x 0.8 GB/s), the
// wire is the bottleneck and level 1 sends 7% fewer bytes than level 0 on
// text and 12% fewer on binary data, for 13-15% more CPU; level 2 is level
// 1 again, and level 3 halves the speed for 2% on text.  Grouping is what
// matters most: 16-page groups run 2.4-3x faster than single pages at
// level 1 (ISA-L's fixed cost per call) and compress 40% better on text.
// Level 0 is the choice for a link near the compressors' speed (10 Gbit/s:
// it needs ratio > 3.1 to pay instead of 4.6); the engine may pass it.
#include "stream/codec/codec.hpp"

#include <algorithm>
#include <cstring>

#include <isa-l/igzip_lib.h>
#include <zlib.h>

namespace fastmig::codec {

const char* algorithm_name(Algorithm a)
{
    switch (a) {
    case Algorithm::none: return "none";
    case Algorithm::igzip: return "igzip";
    case Algorithm::zlib: return "zlib";
    }
    return "unknown";
}

Algorithm parse_algorithm(const std::string& name)
{
    for (Algorithm a : {Algorithm::none, Algorithm::igzip, Algorithm::zlib})
        if (name == algorithm_name(a))
            return a;
    throw Error("unknown compression algorithm \"" + name + "\" (known: none, igzip, zlib)");
}

namespace {

// Caller bugs (a group of the wrong size) are Error; only what the peer sent
// is StreamError.
void check_group(std::size_t bytes, const char* what)
{
    if (bytes == 0 || bytes % kPageSize != 0 || bytes > kMaxGroupPages * kPageSize)
        throw Error(std::string(what) + ": " + std::to_string(bytes) + " bytes is not a group of 1.." +
                    std::to_string(kMaxGroupPages) + " pages");
}

void check_blob(std::size_t bytes, std::size_t out_bytes)
{
    // A group of n pages may not carry more than n * wire::kMaxEncodedPage bytes
    // on the wire; the same bound here keeps the inflaters' work linear in
    // what the wire allows, whatever the caller hands in.
    if (bytes == 0 || bytes > out_bytes / kPageSize * kMaxXbzrle)
        throw StreamError("deflate: compressed group of " + std::to_string(bytes) + " bytes for " +
                          std::to_string(out_bytes / kPageSize) + " pages is out of bounds");
}

[[noreturn]] void corrupt(const std::string& what) { throw StreamError("deflate: " + what); }

class IgzipCompressor final : public Compressor {
public:
    explicit IgzipCompressor(int level) : level_(level)
    {
        // Level 0 needs no buffer; levels 1-3 keep their hash tables in it.
        // The "default" sizes are ISA-L's suggestion for large inputs; a
        // 64 KiB group fits them whole, so the compressor never flushes
        // tokens half-way through a group.
        static constexpr std::size_t sizes[] = {0, ISAL_DEF_LVL1_DEFAULT, ISAL_DEF_LVL2_DEFAULT,
                                                ISAL_DEF_LVL3_DEFAULT};
        level_buf_.resize(sizes[level]);
    }

    std::size_t compress(std::span<const std::uint8_t> in, std::span<std::uint8_t> out, std::size_t limit) override
    {
        check_group(in.size(), "igzip");
        isal_zstream s;
        isal_deflate_stateless_init(&s);
        s.level = static_cast<std::uint32_t>(level_);
        s.level_buf = level_buf_.empty() ? nullptr : level_buf_.data();
        s.level_buf_size = static_cast<std::uint32_t>(level_buf_.size());
        s.gzip_flag = IGZIP_DEFLATE;
        s.end_of_stream = 1;
        s.flush = NO_FLUSH;
        s.next_in = const_cast<std::uint8_t*>(in.data()); // ISA-L only reads it
        s.avail_in = static_cast<std::uint32_t>(in.size());
        s.next_out = out.data();
        s.avail_out = static_cast<std::uint32_t>(std::min({out.size(), limit, kMaxEncodedGroup}));
        const int r = isal_deflate_stateless(&s);
        if (r == STATELESS_OVERFLOW)
            return 0;
        if (r != COMP_OK)
            throw Error("igzip: isal_deflate_stateless failed with " + std::to_string(r));
        return s.total_out;
    }

private:
    int level_;
    std::vector<std::uint8_t> level_buf_;
};

class ZlibCompressor final : public Compressor {
public:
    explicit ZlibCompressor(int level)
    {
        std::memset(&z_, 0, sizeof z_);
        // windowBits -15: raw deflate, 32 KiB window; memLevel 8 is zlib's
        // default (9 buys nothing on 64 KiB inputs).
        if (deflateInit2(&z_, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            throw Error("zlib: deflateInit2 failed");
    }
    ~ZlibCompressor() override { deflateEnd(&z_); }

    std::size_t compress(std::span<const std::uint8_t> in, std::span<std::uint8_t> out, std::size_t limit) override
    {
        check_group(in.size(), "zlib");
        deflateReset(&z_);
        z_.next_in = const_cast<Bytef*>(in.data());
        z_.avail_in = static_cast<uInt>(in.size());
        z_.next_out = out.data();
        z_.avail_out = static_cast<uInt>(std::min({out.size(), limit, kMaxEncodedGroup}));
        const int r = deflate(&z_, Z_FINISH);
        if (r == Z_STREAM_END)
            return z_.total_out;
        if (r == Z_OK || r == Z_BUF_ERROR) // out of room: does not fit `limit`
            return 0;
        throw Error("zlib: deflate failed with " + std::to_string(r));
    }

private:
    z_stream z_;
};

class IgzipDecompressor final : public Decompressor {
public:
    // inflate_state is ~85 KiB: on the heap, once per decompressor.
    IgzipDecompressor() : st_(std::make_unique<inflate_state>()) {}

    void decompress(std::span<const std::uint8_t> in, std::span<std::uint8_t> out) override
    {
        check_group(out.size(), "igzip inflate");
        check_blob(in.size(), out.size());
        inflate_state& st = *st_;
        isal_inflate_init(&st);
        st.crc_flag = ISAL_DEFLATE; // raw deflate, no wrapper, no checksum
        st.next_in = const_cast<std::uint8_t*>(in.data());
        st.avail_in = static_cast<std::uint32_t>(in.size());
        st.next_out = out.data();
        st.avail_out = static_cast<std::uint32_t>(out.size());
        // Stateless inflate stops at avail_out (measured: it reports
        // ISAL_OUT_OVERFLOW rather than write past it) and, on success,
        // gives back the input bytes its bit buffer read ahead, so avail_in
        // is exactly the trailing garbage.
        const int r = isal_inflate_stateless(&st);
        switch (r) {
        case ISAL_DECOMP_OK: break;
        case ISAL_OUT_OVERFLOW: corrupt("inflates to more than " + std::to_string(out.size()) + " bytes");
        case ISAL_END_INPUT:
            corrupt("truncated: input ended after " + std::to_string(st.total_out) + " of " +
                    std::to_string(out.size()) + " bytes");
        case ISAL_INVALID_BLOCK: corrupt("invalid block");
        case ISAL_INVALID_SYMBOL: corrupt("invalid symbol");
        case ISAL_INVALID_LOOKBACK: corrupt("invalid distance");
        default: corrupt("inflate failed with ISA-L error " + std::to_string(r));
        }
        if (st.total_out != out.size())
            corrupt("inflates to " + std::to_string(st.total_out) + " bytes, expected " + std::to_string(out.size()));
        if (st.avail_in != 0)
            corrupt(std::to_string(st.avail_in) + " trailing bytes after the end of the stream");
    }

private:
    std::unique_ptr<inflate_state> st_;
};

class ZlibDecompressor final : public Decompressor {
public:
    ZlibDecompressor()
    {
        std::memset(&z_, 0, sizeof z_);
        if (inflateInit2(&z_, -15) != Z_OK)
            throw Error("zlib: inflateInit2 failed");
    }
    ~ZlibDecompressor() override { inflateEnd(&z_); }

    void decompress(std::span<const std::uint8_t> in, std::span<std::uint8_t> out) override
    {
        check_group(out.size(), "zlib inflate");
        check_blob(in.size(), out.size());
        inflateReset(&z_);
        z_.next_in = const_cast<Bytef*>(in.data());
        z_.avail_in = static_cast<uInt>(in.size());
        z_.next_out = out.data();
        z_.avail_out = static_cast<uInt>(out.size());
        int r = inflate(&z_, Z_FINISH);
        if (r != Z_STREAM_END && r != Z_DATA_ERROR && z_.avail_out == 0) {
            // `out` is full but the stream has not ended.  Either an
            // end-of-block code is still to be read (legal) or there is more
            // data (too much): one byte of scratch tells which, and `out`
            // is never written past.
            std::uint8_t scratch;
            z_.next_out = &scratch;
            z_.avail_out = 1;
            r = inflate(&z_, Z_FINISH);
            if (z_.avail_out == 0)
                corrupt("inflates to more than " + std::to_string(out.size()) + " bytes");
        }
        if (r == Z_DATA_ERROR)
            corrupt(std::string("corrupt stream: ") + (z_.msg ? z_.msg : "zlib data error"));
        if (r != Z_STREAM_END) {
            if (z_.avail_in == 0)
                corrupt("truncated: input ended after " + std::to_string(z_.total_out) + " of " +
                        std::to_string(out.size()) + " bytes");
            corrupt("inflate failed with zlib error " + std::to_string(r));
        }
        if (z_.total_out != out.size())
            corrupt("inflates to " + std::to_string(z_.total_out) + " bytes, expected " + std::to_string(out.size()));
        if (z_.avail_in != 0)
            corrupt(std::to_string(z_.avail_in) + " trailing bytes after the end of the stream");
    }

private:
    z_stream z_;
};

} // namespace

std::size_t Compressor::compress_pages(std::span<const std::uint8_t* const> pages, std::span<std::uint8_t> out,
                                       std::size_t limit)
{
    if (pages.empty() || pages.size() > kMaxGroupPages)
        throw Error("compress_pages: " + std::to_string(pages.size()) + " pages is not a group of 1.." +
                    std::to_string(kMaxGroupPages));
    bool adjacent = true;
    for (std::size_t i = 1; i < pages.size() && adjacent; ++i)
        adjacent = pages[i] == pages[0] + i * kPageSize;
    if (adjacent)
        return compress({pages[0], pages.size() * kPageSize}, out, limit);
    staging_.resize(kMaxGroupPages * kPageSize);
    for (std::size_t i = 0; i < pages.size(); ++i)
        std::memcpy(staging_.data() + i * kPageSize, pages[i], kPageSize);
    return compress({staging_.data(), pages.size() * kPageSize}, out, limit);
}

std::unique_ptr<Compressor> make_compressor(Algorithm a, int level)
{
    switch (a) {
    case Algorithm::none: return nullptr; // nothing to run: the caller sends raw
    case Algorithm::igzip:
        if (level < 0 || level > 3)
            throw Error("igzip level " + std::to_string(level) + " is not supported (0..3)");
        return std::make_unique<IgzipCompressor>(level);
    case Algorithm::zlib:
        if (level < 1 || level > 9)
            throw Error("zlib level " + std::to_string(level) + " is not supported (1..9)");
        return std::make_unique<ZlibCompressor>(level);
    }
    throw Error("unknown compression algorithm " + std::to_string(static_cast<unsigned>(a)));
}

std::unique_ptr<Decompressor> make_decompressor(Algorithm a)
{
    // A receiver inflates whatever deflate it is sent; `none` (the source
    // compresses nothing) still gets the fastest inflater in case the
    // receiver is asked to decode anyway.
    if (a == Algorithm::zlib)
        return std::make_unique<ZlibDecompressor>();
    return std::make_unique<IgzipDecompressor>();
}

} // namespace fastmig::codec
