// Fuzz target: the page decoders of stream/codec/ called directly with
// hostile input: XBZRLE deltas, and deflate groups through both inflaters
// (ISA-L igzip and zlib).
//
// Input: flags:u8, then the delta or compressed blob.
//   flags & 3 == 0: XBZRLE decode into a page
//   flags & 3 == 1: igzip inflate;  2: zlib inflate;  3: both, compared
//   flags >> 4:     pages in the deflate group, minus 1 (1..16 pages)
// Input and output buffers are fenced (fuzz_common.hpp, Fenced) to exactly
// the size the decoder is given, so AddressSanitizer sees any byte read or
// written past them.  Checked beyond "no
// crash": a refused XBZRLE delta leaves the page untouched (the codec's
// promise), an accepted one gives what a reference decoder written from
// the format document gives, and the two inflaters agree on every input.
#include "tests/fuzz/fuzz_common.hpp"

#include "stream/codec/codec.hpp"

#include <algorithm>
#include <memory>

using namespace fastmig;
using namespace fastmig::fuzz;

namespace {

// docs/stream-format.md, "XBZRLE delta", read literally and independently of
// xbzrle.cpp: runs of skip:varint count:varint bytes[count], varints LEB128
// of at most 2 bytes, count >= 1, runs inside the page.  False: malformed.
bool reference_xbzrle(std::span<const std::uint8_t> d, std::uint8_t* page)
{
    if (d.empty() || d.size() > codec::kMaxXbzrle)
        return false;
    // Pass 0 validates the whole delta, pass 1 applies it.
    for (int apply = 0; apply < 2; ++apply) {
        std::size_t i = 0, pos = 0;
        auto varint = [&](std::size_t& v) {
            if (i >= d.size())
                return false;
            v = d[i] & 0x7f;
            if (d[i++] & 0x80) {
                if (i >= d.size() || (d[i] & 0x80))
                    return false;
                v |= std::size_t{d[i++]} << 7;
            }
            return true;
        };
        while (i < d.size()) {
            std::size_t skip, count;
            if (!varint(skip) || !varint(count) || count == 0)
                return false;
            if (pos + skip + count > kPageSize || i + count > d.size())
                return false;
            pos += skip;
            for (std::size_t k = 0; apply && k < count; ++k)
                page[pos + k] = d[i + k];
            pos += count;
            i += count;
        }
    }
    return true;
}

void fill(std::uint8_t* p, std::size_t n, std::uint8_t seed)
{
    for (std::size_t i = 0; i < n; ++i)
        p[i] = static_cast<std::uint8_t>(seed + i * 7);
}

void fuzz_xbzrle(std::span<const std::uint8_t> delta, std::uint8_t seed)
{
    static Fenced page_buf(kPageSize), delta_buf(codec::kMaxEncodedGroup);
    std::uint8_t before[kPageSize], expect[kPageSize];
    auto page = page_buf.take(kPageSize);
    fill(page.data(), kPageSize, seed);
    std::memcpy(before, page.data(), kPageSize);
    std::memcpy(expect, page.data(), kPageSize);
    // The delta fenced too: a read past its end is seen.
    auto d = delta_buf.copy(delta.first(std::min(delta.size(), codec::kMaxEncodedGroup)));
    const bool ref_ok = reference_xbzrle(d, expect);
    bool ok = true;
    try {
        codec::xbzrle_decode(d, page);
    } catch (const StreamError&) {
        ok = false;
        FUZZ_ASSERT(std::memcmp(page.data(), before, kPageSize) == 0);
    }
    FUZZ_ASSERT(ok == ref_ok);
    if (ok)
        FUZZ_ASSERT(std::memcmp(page.data(), expect, kPageSize) == 0);
}

// Returns true when the blob inflated; the output is in `out`.
bool inflate(codec::Decompressor& z, std::span<const std::uint8_t> blob, std::uint8_t* out, std::size_t n)
{
    try {
        z.decompress(blob, {out, n});
        return true;
    } catch (const StreamError&) {
        return false;
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    static auto igzip = codec::make_decompressor(codec::Algorithm::igzip);
    static auto zlib = codec::make_decompressor(codec::Algorithm::zlib);
    Input in(data, size);
    const std::uint8_t flags = in.u8();
    auto rest = in.rest();
    const unsigned mode = flags & 3;
    if (mode == 0) {
        fuzz_xbzrle(rest, flags);
        return 0;
    }
    const std::size_t pages = 1 + (flags >> 4);
    const std::size_t n = pages * kPageSize;
    // Fenced input and outputs (see Fenced), sized exactly.  The blob may
    // be longer than the wire allows: the decoders must refuse it.
    static Fenced in_buf(2 * codec::kMaxEncodedGroup), out_a(codec::kMaxGroupPages * kPageSize),
        out_b(codec::kMaxGroupPages * kPageSize);
    auto b = in_buf.copy(rest.first(std::min(rest.size(), 2 * codec::kMaxEncodedGroup)));
    auto o1 = out_a.take(n, 0xa5), o2 = out_b.take(n, 0x5a);
    if (mode == 1) {
        inflate(*igzip, b, o1.data(), n);
    } else if (mode == 2) {
        inflate(*zlib, b, o2.data(), n);
    } else {
        // Either end may use either library (codec.hpp): a group one
        // inflater takes and the other refuses, or decodes differently,
        // would fail or corrupt a migration depending on the build.
        const bool a = inflate(*igzip, b, o1.data(), n);
        const bool c = inflate(*zlib, b, o2.data(), n);
        FUZZ_ASSERT(a == c);
        if (a)
            FUZZ_ASSERT(std::memcmp(o1.data(), o2.data(), n) == 0);
    }
    return 0;
}
