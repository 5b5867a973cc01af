// XBZRLE: a page as a list of changes against the copy last sent.
//
// Format (docs/stream-format.md, "XBZRLE delta"): a non-empty sequence of
//     skip:varint  count:varint  bytes[count]
// where `skip` bytes of the page are unchanged and the next `count` bytes
// are replaced by `bytes` (the new content itself, not an XOR: the decoder
// then copies, and the size is the same).  Varints are LEB128 (7 bits per
// byte, low first, at most 2 bytes since no value exceeds 4096).  count >= 1;
// the runs must stay inside the page; the unchanged tail of the page is not
// encoded.  An unchanged page encodes as {0, 1, page[0]}, so a delta is
// never empty (an empty delta would be a wire length of 0).
//
// The encoder compares 8 bytes at a time: an unchanged run ends at the first
// differing byte (count trailing zero bits of the XOR), and a changed run
// ends at the first point where 8 consecutive bytes are equal again, so a
// gap shorter than 8 bytes inside a change is sent as literal bytes (at most
// 7 bytes, versus 2-3 bytes of headers for a split: a small loss, and the
// scan never looks at a byte twice).
#include "stream/codec/codec.hpp"
#include "stream/bytes.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

namespace fastmig::codec {

namespace {

std::uint64_t load64(const std::uint8_t* p) { return bytes::load_le<std::uint64_t>(p); }

// Byte index of the first / last non-zero byte of a non-zero XOR of two
// little-endian loads: the low byte of a little-endian load is the first in
// memory on every host.
unsigned first_diff(std::uint64_t x) { return static_cast<unsigned>(std::countr_zero(x)) / 8; }
unsigned last_diff(std::uint64_t x) { return 7 - static_cast<unsigned>(std::countl_zero(x)) / 8; }

std::size_t varint_size(std::size_t v) { return v < 0x80 ? 1 : v < 0x4000 ? 2 : 3; }

std::uint8_t* put_varint(std::uint8_t* p, std::size_t v)
{
    while (v >= 0x80) {
        *p++ = static_cast<std::uint8_t>(v | 0x80);
        v >>= 7;
    }
    *p++ = static_cast<std::uint8_t>(v);
    return p;
}

// Reads a varint of at most 2 bytes (values up to 16383, enough for 4096);
// a longer one is malformed by definition, which bounds the work too.
std::size_t get_varint(const std::uint8_t*& p, const std::uint8_t* end)
{
    if (p == end)
        throw StreamError("xbzrle: delta truncated inside a run length");
    std::size_t v = *p & 0x7f;
    if (*p++ & 0x80) {
        if (p == end)
            throw StreamError("xbzrle: delta truncated inside a run length");
        if (*p & 0x80)
            throw StreamError("xbzrle: run length longer than 2 bytes");
        v |= std::size_t{*p++} << 7;
    }
    return v;
}

} // namespace

std::size_t xbzrle_encode(std::span<const std::uint8_t> old_page, std::span<const std::uint8_t> new_page,
                          std::span<std::uint8_t> out, std::size_t limit)
{
    if (old_page.size() != kPageSize || new_page.size() != kPageSize)
        throw Error("xbzrle_encode: pages must be " + std::to_string(kPageSize) + " bytes");
    const std::uint8_t* a = old_page.data();
    const std::uint8_t* b = new_page.data();
    constexpr std::size_t n = kPageSize;
    limit = std::min({limit, out.size(), kMaxXbzrle});
    std::uint8_t* o = out.data();
    std::size_t used = 0;

    std::size_t pos = 0;
    for (;;) {
        // Unchanged run.
        const std::size_t run_start = pos;
        while (pos + 8 <= n) {
            const std::uint64_t x = load64(a + pos) ^ load64(b + pos);
            if (x) {
                pos += first_diff(x);
                goto changed;
            }
            pos += 8;
        }
        while (pos < n && a[pos] == b[pos]) // only reached in the last 7 bytes
            ++pos;
        if (pos == n)
            break; // the unchanged tail is implied
    changed:
        // Changed run: up to the next 8 equal bytes, or the end of the page.
        std::size_t end = pos;
        for (;;) {
            if (end + 8 <= n) {
                const std::uint64_t x = load64(a + end) ^ load64(b + end);
                if (!x)
                    break;
                end += last_diff(x) + 1;
                if (end - pos > limit - used)
                    return 0; // the literal alone no longer fits: stop scanning now
            } else {
                std::size_t last = n;
                while (last > end && a[last - 1] == b[last - 1])
                    --last;
                end = last;
                break;
            }
        }
        const std::size_t skip = pos - run_start, count = end - pos;
        const std::size_t need = varint_size(skip) + varint_size(count) + count;
        if (used + need > limit)
            return 0; // bail out as soon as the delta outgrows the limit
        o = put_varint(o, skip);
        o = put_varint(o, count);
        std::memcpy(o, b + pos, count);
        o += count;
        used += need;
        pos = end;
        if (pos == n)
            break;
    }
    if (used == 0) {
        // Unchanged page: a delta must not be empty (see the format).
        if (limit < 3)
            return 0;
        o[0] = 0;
        o[1] = 1;
        o[2] = b[0];
        used = 3;
    }
    return used;
}

void xbzrle_decode(std::span<const std::uint8_t> delta, std::span<std::uint8_t> page)
{
    if (page.size() != kPageSize)
        throw Error("xbzrle_decode: page must be " + std::to_string(kPageSize) + " bytes");
    if (delta.empty() || delta.size() > kMaxXbzrle)
        throw StreamError("xbzrle: delta of " + std::to_string(delta.size()) + " bytes is out of bounds (1.." +
                          std::to_string(kMaxXbzrle) + ")");
    // Two passes: validate every run first, then apply, so a malformed delta
    // leaves the page as it was.  Deltas are small; the second pass is cheap.
    for (int apply = 0; apply < 2; ++apply) {
        const std::uint8_t* p = delta.data();
        const std::uint8_t* const end = p + delta.size();
        std::size_t pos = 0;
        while (p != end) {
            const std::size_t skip = get_varint(p, end);
            const std::size_t count = get_varint(p, end);
            if (count == 0)
                throw StreamError("xbzrle: literal run of length 0 at page offset " + std::to_string(pos + skip));
            if (skip > kPageSize - pos || count > kPageSize - pos - skip)
                throw StreamError("xbzrle: run of " + std::to_string(skip) + " + " + std::to_string(count) +
                                  " bytes at page offset " + std::to_string(pos) + " runs past the page");
            if (count > static_cast<std::size_t>(end - p))
                throw StreamError("xbzrle: delta truncated: literal run of " + std::to_string(count) +
                                  " bytes, " + std::to_string(end - p) + " left");
            pos += skip;
            if (apply)
                std::memcpy(page.data() + pos, p, count);
            pos += count;
            p += count;
        }
    }
}

} // namespace fastmig::codec
