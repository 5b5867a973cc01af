// Unit tests for the page codecs (stream/codec/): deflate groups with both
// libraries and across them, hostile compressed input, XBZRLE, the page
// cache and the compression policy.  Run under ASan as well: every hostile
// case decodes into a buffer of exactly the expected size, so a write past
// it is caught.
#define BOOST_TEST_MODULE codec
#include <boost/test/unit_test.hpp>

#include "stream_error_check.hpp"

#include "stream/codec/codec.hpp"
#include "stream/domain/sim/sim_content.hpp"

#include <cmath>
#include <cstring>
#include <functional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

namespace fastmig::codec {
// For BOOST_TEST's messages (found by argument-dependent lookup).
std::ostream& operator<<(std::ostream& os, Algorithm a) { return os << algorithm_name(a); }
} // namespace fastmig::codec

using namespace fastmig;
using namespace fastmig::codec;
using fastmig::sim::PageKind;

namespace {

using Bytes = std::vector<std::uint8_t>;

constexpr PageKind kKinds[] = {PageKind::zero, PageKind::text, PageKind::binary, PageKind::random};

Bytes pages_of(PageKind kind, std::size_t n, std::uint64_t seed = 1, Pfn first = 0)
{
    Bytes b(n * kPageSize);
    for (std::size_t i = 0; i < n; ++i)
        sim::fill_page(kind, b.data() + i * kPageSize, seed, first + i, 0);
    return b;
}

struct Codec {
    Algorithm algo;
    int level;
};
const Codec kCodecs[] = {{Algorithm::igzip, 0}, {Algorithm::igzip, 1}, {Algorithm::igzip, 3},
                         {Algorithm::zlib, 1}, {Algorithm::zlib, 6}};

Bytes compress_all(Compressor& c, const Bytes& in)
{
    Bytes out(kMaxEncodedGroup);
    const std::size_t n = c.compress(in, out, out.size());
    BOOST_REQUIRE(n > 0);
    out.resize(n);
    return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(deflate)

BOOST_AUTO_TEST_CASE(names)
{
    BOOST_TEST(parse_algorithm("igzip") == Algorithm::igzip);
    BOOST_TEST(parse_algorithm("zlib") == Algorithm::zlib);
    BOOST_TEST(parse_algorithm("none") == Algorithm::none);
    BOOST_TEST(algorithm_name(Algorithm::zlib) == std::string("zlib"));
    try {
        parse_algorithm("zstd");
        BOOST_FAIL("zstd accepted");
    } catch (const Error& e) {
        BOOST_TEST(std::string(e.what()).find("known: none, igzip, zlib") != std::string::npos);
    }
    BOOST_TEST(!make_compressor(Algorithm::none));
    BOOST_CHECK_THROW(make_compressor(Algorithm::igzip, 4), Error);
    BOOST_CHECK_THROW(make_compressor(Algorithm::zlib, 0), Error);
}

BOOST_AUTO_TEST_CASE(round_trips_every_codec_kind_and_group_size)
{
    // Every compressor's output must inflate with both decompressors: that
    // is the interop rule (igzip -> zlib and zlib -> igzip) as well.
    auto inflate_igzip = make_decompressor(Algorithm::igzip);
    auto inflate_zlib = make_decompressor(Algorithm::zlib);
    for (const Codec& codec : kCodecs) {
        auto comp = make_compressor(codec.algo, codec.level);
        for (PageKind kind : kKinds) {
            for (std::size_t n = 1; n <= kMaxGroupPages; ++n) {
                BOOST_TEST_CONTEXT(algorithm_name(codec.algo) << " " << codec.level << " "
                                                              << sim::page_kind_name(kind) << " x" << n)
                {
                    const Bytes in = pages_of(kind, n, 7, n * 100);
                    const Bytes blob = compress_all(*comp, in);
                    BOOST_TEST(blob.size() <= n * kMaxXbzrle);
                    for (Decompressor* d : {inflate_igzip.get(), inflate_zlib.get()}) {
                        Bytes out(in.size(), 0xee);
                        d->decompress(blob, out);
                        BOOST_TEST((out == in));
                    }
                    if (kind == PageKind::text || kind == PageKind::zero)
                        BOOST_TEST(blob.size() * 2 < in.size());
                }
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(scattered_pages)
{
    // compress_pages gives the same stream whether the pages are adjacent
    // or scattered (gathered first), and it inflates to the pages in order.
    const Bytes in = pages_of(PageKind::text, 5, 2);
    std::vector<Bytes> apart;
    for (std::size_t i = 0; i < 5; ++i)
        apart.emplace_back(in.begin() + i * kPageSize, in.begin() + (i + 1) * kPageSize);
    std::vector<const std::uint8_t*> scattered, adjacent;
    for (std::size_t i = 0; i < 5; ++i) {
        scattered.push_back(apart[i].data());
        adjacent.push_back(in.data() + i * kPageSize);
    }
    for (const Codec& codec : kCodecs) {
        auto comp = make_compressor(codec.algo, codec.level);
        const Bytes whole = compress_all(*comp, in);
        Bytes a(kMaxEncodedGroup), b(kMaxEncodedGroup);
        a.resize(comp->compress_pages(adjacent, a, a.size()));
        b.resize(comp->compress_pages(scattered, b, b.size()));
        BOOST_TEST((a == whole));
        BOOST_TEST((b == whole));
        BOOST_CHECK_THROW(comp->compress_pages({}, a, a.size()), Error);
    }
}

BOOST_AUTO_TEST_CASE(limit_bails_out)
{
    const Bytes random = pages_of(PageKind::random, 4);
    const Bytes text = pages_of(PageKind::text, 4);
    for (const Codec& codec : kCodecs) {
        auto comp = make_compressor(codec.algo, codec.level);
        Bytes out(kMaxEncodedGroup);
        // Random pages (bar their small pfn/version tag) cannot shrink by half.
        BOOST_TEST(comp->compress(random, out, random.size() / 2) == 0u);
        // Text fits a generous limit and not a tiny one.
        const std::size_t n = comp->compress(text, out, text.size() / 2);
        BOOST_TEST(n > 0u);
        BOOST_TEST(n <= text.size() / 2);
        BOOST_TEST(comp->compress(text, out, 16) == 0u);
        // The out span bounds the output as well as the limit does.
        BOOST_TEST(comp->compress(text, std::span<std::uint8_t>(out).first(16), out.size()) == 0u);
        // A group that is not whole pages is a caller bug.
        BOOST_CHECK_THROW(comp->compress(std::span<const std::uint8_t>(text).first(100), out, out.size()), Error);
        BOOST_CHECK_THROW(comp->compress(Bytes(17 * kPageSize), out, out.size()), Error);
    }
}

BOOST_AUTO_TEST_CASE(hostile_input)
{
    std::mt19937_64 rng(42);
    auto comp_i = make_compressor(Algorithm::igzip, 1);
    auto comp_z = make_compressor(Algorithm::zlib, 1);
    for (Algorithm da : {Algorithm::igzip, Algorithm::zlib}) {
        auto d = make_decompressor(da);
        BOOST_TEST_CONTEXT("inflate with " << algorithm_name(da))
        {
            for (Compressor* c : {comp_i.get(), comp_z.get()}) {
                const Bytes in = pages_of(PageKind::text, 4, 3);
                const Bytes blob = compress_all(*c, in);
                // Valid stream for 4 pages decoded into 3 or 5 pages' room.
                {
                    Bytes out(3 * kPageSize);
                    CHECK_STREAM_ERROR(d->decompress(blob, out), "inflates to more than 12288 bytes");
                    Bytes out5(5 * kPageSize);
                    CHECK_STREAM_ERROR(d->decompress(blob, out5), "deflate: inflates to 16384 bytes, expected 20480");
                }
                // Trailing garbage.
                for (std::size_t extra : {1u, 2u, 7u, 100u}) {
                    Bytes t = blob;
                    t.resize(t.size() + extra, 0x5a);
                    Bytes out(in.size());
                    CHECK_STREAM_ERROR(d->decompress(t, out), "trailing bytes");
                }
                // Every truncation.
                for (std::size_t n = 0; n < blob.size(); ++n) {
                    Bytes out(in.size());
                    CHECK_STREAM_ERROR(d->decompress(std::span<const std::uint8_t>(blob).first(n), out), "deflate: ");
                }
                // Bit flips: either refused, or (rarely: deflate has no
                // checksum, the record CRC is what catches those) decoded to
                // exactly the size asked for.
                for (int i = 0; i < 2000; ++i) {
                    Bytes m = blob;
                    m[rng() % m.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
                    Bytes out(in.size());
                    try {
                        d->decompress(m, out);
                    } catch (const StreamError&) {
                    }
                }
            }
            // Random bytes of every length up to a few KiB, into a one-page
            // and a 16-page output.
            for (int i = 0; i < 3000; ++i) {
                Bytes junk(1 + rng() % 5000);
                for (auto& b : junk)
                    b = static_cast<std::uint8_t>(rng());
                Bytes out(kPageSize * (i % 2 ? 1 : kMaxGroupPages));
                if (junk.size() > out.size() / kPageSize * kMaxXbzrle)
                    junk.resize(out.size() / kPageSize * kMaxXbzrle);
                try {
                    d->decompress(junk, out);
                } catch (const StreamError&) {
                }
            }
            // Input lengths the wire would never allow.
            Bytes out(kPageSize);
            CHECK_STREAM_ERROR(d->decompress({}, out), "out of bounds");
            CHECK_STREAM_ERROR(d->decompress(Bytes(kMaxXbzrle + 1), out), "out of bounds");
            // A stored block claiming 65535 bytes into one page's room.
            Bytes stored = {0x01, 0xff, 0xff, 0x00, 0x00};
            stored.resize(stored.size() + 4000, 0);
            CHECK_STREAM_ERROR(d->decompress(stored, out), "deflate: ");
            // An empty final stored block: a valid stream of 0 bytes.
            CHECK_STREAM_ERROR(d->decompress(Bytes{0x01, 0x00, 0x00, 0xff, 0xff}, out),
                               "inflates to 0 bytes, expected 4096");
        }
    }
}

BOOST_AUTO_TEST_CASE(longer_stream_into_every_smaller_group)
{
    // A valid 16-page stream decoded into 1..15 pages: refused, and (ASan)
    // nothing written past the n pages, whatever kind of data and wherever
    // the output runs out (inside a literal run or a long match).
    for (PageKind kind : {PageKind::text, PageKind::binary, PageKind::random}) {
        for (Algorithm ca : {Algorithm::igzip, Algorithm::zlib}) {
            auto comp = make_compressor(ca, 1);
            const Bytes in = pages_of(kind, kMaxGroupPages, 8);
            Bytes blob(kMaxEncodedGroup);
            const std::size_t n = comp->compress(in, blob, blob.size());
            BOOST_REQUIRE(n > 0u);
            blob.resize(n);
            for (Algorithm da : {Algorithm::igzip, Algorithm::zlib}) {
                auto d = make_decompressor(da);
                for (std::size_t pages = 1; pages < kMaxGroupPages; ++pages) {
                    Bytes out(pages * kPageSize);
                    if (blob.size() > pages * kMaxXbzrle)
                        CHECK_STREAM_ERROR(d->decompress(blob, out), "out of bounds");
                    else
                        CHECK_STREAM_ERROR(d->decompress(blob, out), "inflates to more than");
                }
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(hostile_zero_bomb_is_bounded)
{
    // The most output a legal-size input can ask for is still just `out`:
    // a stream of 16 pages of zeros decoded into one page is refused.
    auto comp = make_compressor(Algorithm::zlib, 9);
    const Bytes zeros(kMaxGroupPages * kPageSize, 0);
    const Bytes blob = compress_all(*comp, zeros);
    for (Algorithm da : {Algorithm::igzip, Algorithm::zlib}) {
        Bytes out(kPageSize);
        CHECK_STREAM_ERROR(make_decompressor(da)->decompress(blob, out), "inflates to more than 4096");
    }
}

BOOST_AUTO_TEST_SUITE_END()

// ---- XBZRLE -------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(xbzrle)

BOOST_AUTO_TEST_CASE(round_trip_small_changes)
{
    std::mt19937_64 rng(1);
    Bytes out(kMaxXbzrle);
    for (PageKind kind : kKinds) {
        for (int iter = 0; iter < 2000; ++iter) {
            const Bytes old_page = pages_of(kind, 1, 5, iter);
            Bytes new_page = old_page;
            const unsigned edits = rng() % 6;
            for (unsigned e = 0; e < edits; ++e) {
                const std::size_t at = rng() % kPageSize;
                const std::size_t len = 1 + rng() % (rng() % 4 == 0 ? 300 : 16);
                for (std::size_t i = at; i < std::min(kPageSize, at + len); ++i)
                    new_page[i] = static_cast<std::uint8_t>(rng());
            }
            const std::size_t n = xbzrle_encode(old_page, new_page, out, out.size());
            BOOST_REQUIRE(n > 0u);
            Bytes page = old_page;
            xbzrle_decode(std::span<const std::uint8_t>(out).first(n), page);
            BOOST_REQUIRE((page == new_page));
        }
    }
}

BOOST_AUTO_TEST_CASE(sizes)
{
    const Bytes old_page = pages_of(PageKind::binary, 1, 9);
    Bytes out(kMaxXbzrle);
    // Unchanged page: the 3-byte minimal delta.
    BOOST_TEST(xbzrle_encode(old_page, old_page, out, out.size()) == 3u);
    Bytes page = old_page;
    xbzrle_decode(std::span<const std::uint8_t>(out).first(3), page);
    BOOST_TEST((page == old_page));
    // A 64-byte change in the middle: 2 + 1 bytes of header + 64.
    Bytes changed = old_page;
    for (std::size_t i = 1000; i < 1064; ++i)
        changed[i] = static_cast<std::uint8_t>(~changed[i]);
    BOOST_TEST(xbzrle_encode(old_page, changed, out, out.size()) == 67u);
    // Changes at both ends of the page.
    changed = old_page;
    changed[0] ^= 1;
    changed[4095] ^= 1;
    const std::size_t n = xbzrle_encode(old_page, changed, out, out.size());
    BOOST_TEST(n == 1u + 1 + 1 + 2 + 1 + 1);
    page = old_page;
    xbzrle_decode(std::span<const std::uint8_t>(out).first(n), page);
    BOOST_TEST((page == changed));
}

BOOST_AUTO_TEST_CASE(limit_bails_out)
{
    // Two pages that differ in every 8-byte word (sim pages would share
    // their pfn tag).
    Bytes a(kPageSize), b(kPageSize);
    std::mt19937_64 rng(11);
    for (std::size_t i = 0; i < kPageSize; ++i) {
        a[i] = static_cast<std::uint8_t>(rng());
        b[i] = static_cast<std::uint8_t>(a[i] ^ (1 + rng() % 255));
    }
    Bytes out(kMaxXbzrle);
    BOOST_TEST(xbzrle_encode(a, b, out, 100) == 0u);
    BOOST_TEST(xbzrle_encode(a, b, out, kPageSize) == 0u);
    // A completely different page is 4096 bytes + 3 of headers: within the
    // wire bound, but never below the raw size.
    BOOST_TEST(xbzrle_encode(a, b, out, out.size()) == kPageSize + 3);
    // The out span bounds it too.
    Bytes c = a;
    c[10] ^= 1;
    BOOST_TEST(xbzrle_encode(a, c, std::span<std::uint8_t>(out).first(3), out.size()) == 3u);
    BOOST_TEST(xbzrle_encode(a, c, std::span<std::uint8_t>(out).first(2), out.size()) == 0u);
    BOOST_TEST(xbzrle_encode(a, a, out, 2) == 0u);
}

BOOST_AUTO_TEST_CASE(hostile_deltas)
{
    const Bytes orig = pages_of(PageKind::text, 1, 4);
    auto bad = [&](const Bytes& delta, const std::string& needle) {
        Bytes page = orig;
        BOOST_TEST_CONTEXT(needle)
        {
            CHECK_STREAM_ERROR(xbzrle_decode(delta, page), needle);
            BOOST_TEST((page == orig)); // refused deltas change nothing
        }
    };
    bad({}, "xbzrle: delta of 0 bytes is out of bounds");
    bad(Bytes(kMaxXbzrle + 1, 1), "out of bounds");
    bad({0x00}, "truncated inside a run length");
    bad({0x80}, "truncated inside a run length");
    bad({0x80, 0x80, 0x01}, "run length longer than 2 bytes");
    bad({0x05, 0x00}, "literal run of length 0 at page offset 5");
    bad({0x00, 0x02, 0xaa}, "delta truncated: literal run of 2 bytes, 1 left");
    bad({0x80, 0x20, 0x01, 0xaa}, "run of 4096 + 1 bytes at page offset 0 runs past the page");
    bad({0xff, 0x1f, 0x02, 0xaa, 0xbb}, "runs past the page");             // skip 4095, count 2
    bad({0x00, 0x81, 0x20}, "runs past the page");                         // count 4097
    bad({0x10, 0x01, 0xaa, 0xff, 0x1f, 0x01, 0xbb}, "at page offset 17 runs past the page");
    // Legal edge: the last byte of the page.
    Bytes page = orig;
    xbzrle_decode(Bytes{0xff, 0x1f, 0x01, 0xcc}, page);
    BOOST_TEST(page[4095] == 0xcc);
    BOOST_TEST(std::equal(page.begin(), page.end() - 1, orig.begin()));

    // Random junk never writes outside the page (ASan) nor throws anything
    // but StreamError.
    std::mt19937_64 rng(3);
    for (int i = 0; i < 20000; ++i) {
        Bytes junk(1 + rng() % 64);
        for (auto& b : junk)
            b = static_cast<std::uint8_t>(rng() % 4 ? rng() % 24 : rng());
        Bytes p(kPageSize);
        try {
            xbzrle_decode(junk, p);
        } catch (const StreamError&) {
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()

// ---- PageCache ------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(page_cache)

BOOST_AUTO_TEST_CASE(hits_misses_replace_erase)
{
    PageCache c(4 * kPageSize + 100); // partial pages do not count
    BOOST_TEST(c.capacity_pages() == 4u);
    const Bytes a = pages_of(PageKind::text, 1, 1, 10), b = pages_of(PageKind::text, 1, 1, 11);
    BOOST_TEST(c.find(10) == nullptr);
    c.put(10, a);
    const std::uint8_t* p = c.find(10);
    BOOST_REQUIRE(p);
    BOOST_TEST(std::memcmp(p, a.data(), kPageSize) == 0);
    c.put(10, b); // replace in place
    BOOST_TEST(std::memcmp(c.find(10), b.data(), kPageSize) == 0);
    c.erase(10);
    BOOST_TEST(c.find(10) == nullptr);
    c.erase(12345); // absent: no effect
    BOOST_TEST(c.hits() == 2u);
    BOOST_TEST(c.misses() == 2u);
    BOOST_CHECK_THROW(c.put(1, Bytes(100)), Error);

    PageCache none(100);
    BOOST_TEST(none.capacity_pages() == 0u);
    none.put(1, a);
    BOOST_TEST(none.find(1) == nullptr);
}

BOOST_AUTO_TEST_CASE(clock_eviction_keeps_the_hot_set)
{
    constexpr std::size_t cap = 64;
    PageCache c(cap * kPageSize);
    Bytes page(kPageSize);
    auto put = [&](Pfn pfn) {
        std::memcpy(page.data(), &pfn, sizeof pfn);
        c.put(pfn, page);
    };
    auto holds = [&](Pfn pfn) {
        const std::uint8_t* p = c.find(pfn);
        return p && std::memcmp(p, &pfn, sizeof pfn) == 0;
    };
    // Fill, touch a hot set of 16, then stream 1000 pages sent once.
    for (Pfn pfn = 0; pfn < cap; ++pfn)
        put(pfn);
    for (Pfn pfn = 0; pfn < 16; ++pfn)
        BOOST_TEST(holds(pfn));
    for (Pfn pfn = 1000; pfn < 2000; ++pfn) {
        put(pfn);
        if (pfn % 16 == 0) // the hot set keeps being re-sent and hit
            for (Pfn h = 0; h < 16; ++h)
                BOOST_TEST(holds(h));
    }
    for (Pfn pfn = 0; pfn < 16; ++pfn)
        BOOST_TEST(holds(pfn));
    // The cold pages of the first fill are gone, the newest are there.
    for (Pfn pfn = 16; pfn < cap; ++pfn)
        BOOST_TEST(!holds(pfn));
    BOOST_TEST(holds(1999));
    std::size_t present = 0;
    for (Pfn pfn = 1000; pfn < 2000; ++pfn)
        present += c.find(pfn) != nullptr;
    BOOST_TEST(present <= cap - 16);
    BOOST_TEST(present > 0u);
    BOOST_TEST(c.hits() > 1000u);
}

BOOST_AUTO_TEST_CASE(xbzrle_against_the_cache)
{
    // The way the engine uses the pair: find, encode against it, put.
    PageCache c(8 * kPageSize);
    Bytes cur = pages_of(PageKind::binary, 1, 3, 77), out(kMaxXbzrle);
    BOOST_TEST(!c.find(77));
    c.put(77, cur);
    Bytes dest = cur; // the destination's copy
    std::mt19937_64 rng(5);
    for (int round = 0; round < 50; ++round) {
        for (int k = 0; k < 3; ++k)
            cur[rng() % kPageSize] = static_cast<std::uint8_t>(rng());
        const std::uint8_t* old = c.find(77);
        BOOST_REQUIRE(old);
        const std::size_t n = xbzrle_encode({old, kPageSize}, cur, out, kPageSize / 2);
        BOOST_REQUIRE(n > 0u);
        c.put(77, cur);
        xbzrle_decode(std::span<const std::uint8_t>(out).first(n), dest);
        BOOST_REQUIRE((dest == cur));
    }
    BOOST_TEST(c.hits() == 50u);
}

BOOST_AUTO_TEST_SUITE_END()

// ---- entropy and policy --------------------------------------------------------

BOOST_AUTO_TEST_SUITE(policy)

BOOST_AUTO_TEST_CASE(entropy_probe_separates_kinds)
{
    for (Pfn pfn = 0; pfn < 200; ++pfn) {
        const double z = entropy_probe(pages_of(PageKind::zero, 1, 1, pfn));
        const double t = entropy_probe(pages_of(PageKind::text, 1, 1, pfn));
        const double b = entropy_probe(pages_of(PageKind::binary, 1, 1, pfn));
        const double r = entropy_probe(pages_of(PageKind::random, 1, 1, pfn));
        BOOST_TEST(z == 0.0);
        BOOST_TEST(t < 6.5);
        BOOST_TEST(b < 6.5);
        BOOST_TEST(r > 7.5);
        BOOST_TEST(r <= 8.0);
    }
    BOOST_CHECK_THROW(entropy_probe(Bytes(100)), Error);
}

BOOST_AUTO_TEST_CASE(random_region_goes_raw_and_is_reprobed)
{
    CompressionConfig cfg;
    cfg.entropy_limit = 9; // ratio path only: the probe is tested below
    cfg.reprobe_after = 8;
    CompressionPolicy pol(cfg, 4096);
    const Bytes random = pages_of(PageKind::random, 16);
    auto comp = make_compressor(Algorithm::igzip, 1);
    Bytes out(kMaxEncodedGroup);
    // First group of region 0 is tried, achieves ~1: region goes raw.
    BOOST_TEST(pol.should_compress(0, random));
    pol.record(0, random.size(), comp->compress(random, out, random.size()));
    unsigned tried = 0;
    for (int g = 0; g < 8; ++g)
        tried += pol.should_compress(16 * (g % 16), random);
    BOOST_TEST(tried == 0u);
    // Then it is probed again.
    BOOST_TEST(pol.should_compress(32, random));
    // Other regions are unaffected.
    BOOST_TEST(pol.should_compress(256, random));
    // The region's content became text: one good probe turns it back on.
    const Bytes text = pages_of(PageKind::text, 16);
    pol.record(32, text.size(), comp->compress(text, out, text.size()));
    for (int g = 0; g < 20; ++g)
        BOOST_TEST(pol.should_compress(48, text));
    BOOST_TEST(pol.overall_ratio() > 1.0);
}

BOOST_AUTO_TEST_CASE(text_region_stays_compressed)
{
    CompressionPolicy pol(CompressionConfig{}, 1 << 20);
    auto comp = make_compressor(Algorithm::igzip, 1);
    Bytes out(kMaxEncodedGroup);
    for (Pfn g = 0; g < 200; ++g) {
        const Bytes text = pages_of(PageKind::text, 16, 1, g * 16);
        BOOST_REQUIRE(pol.should_compress(g * 16, text));
        pol.record(g * 16, text.size(), comp->compress(text, out, text.size()));
    }
    BOOST_TEST(pol.overall_ratio() > 2.5);
}

BOOST_AUTO_TEST_CASE(entropy_probe_short_circuit)
{
    CompressionPolicy pol(CompressionConfig{}, 1 << 20);
    const Bytes random = pages_of(PageKind::random, 16);
    const Bytes text = pages_of(PageKind::text, 16);
    // 96 random groups = 6 regions of 16: refused, and a region judged
    // random skips its next groups unprobed (probes at groups 0, 1, 3, 7
    // and 15 of each region), not one probe per group.
    for (Pfn g = 0; g < 96; ++g)
        BOOST_TEST(!pol.should_compress(g * 16, random));
    BOOST_TEST(pol.probes() == 6u * 5u);
    // A region where random groups sit between text ones (images in a page
    // cache) keeps compressing every text group and probes every group.
    CompressionPolicy mixed(CompressionConfig{}, 1 << 20);
    for (Pfn g = 0; g < 64; ++g) {
        const bool is_text = g % 3 != 0;
        BOOST_TEST(mixed.should_compress(g * 16, is_text ? text : random) == is_text);
    }
    BOOST_TEST(mixed.probes() == 64u);
    // A region that was random and now holds text is probed again once its
    // skip has run out.
    CompressionConfig cfg;
    cfg.entropy_skip = 3;
    CompressionPolicy changed(cfg, 1 << 20);
    for (int g = 0; g < 4; ++g) // probes at 0, 1, 3: skip now 3
        changed.should_compress(0, random);
    for (int g = 0; g < 3; ++g)
        BOOST_TEST(!changed.should_compress(0, text));
    BOOST_TEST(changed.should_compress(0, text));
}

// ---- the gate: scripted rates (what the pipeline measures) and a scripted clock --

namespace {

// The pipeline's figures after `seconds` of writing at `link` bytes/s and
// compressing `compress_in` bytes at `crate` bytes/s (per thread, summed).
GateSample sample(double seconds, double link, std::uint64_t compress_in = 0, double crate = 0)
{
    GateSample g;
    g.write_s = seconds;
    g.wire_bytes = std::uint64_t(seconds * link);
    g.compress_in = compress_in;
    g.compress_s = crate > 0 ? double(compress_in) / crate : 0;
    return g;
}

} // namespace

BOOST_AUTO_TEST_CASE(gate_starts_raw_until_the_link_is_measured)
{
    CompressionGate gate(2);
    BOOST_TEST(!gate.verdict().compress());
    BOOST_TEST(gate.verdict().why().find("no link estimate") != std::string::npos);
    // 2 MiB out, even on a slow link: still no evidence.
    BOOST_TEST(!gate.update(sample(0.016, 0.125e9)).compress());
    BOOST_TEST(gate.verdict().link_rate == 0.0);
}

BOOST_AUTO_TEST_CASE(gate_slow_link_compresses_on_the_nominal_rate)
{
    CompressionGate gate(2);
    const auto& v = gate.update(sample(0.1, 0.125e9)); // 1 Gbit/s, 12.5 MB out
    BOOST_TEST(v.compress());
    BOOST_TEST(!v.compress_rate_measured);
    BOOST_TEST(v.compress_rate == CompressionGate::kNominalCompressRate);
    const double ct = 2 * CompressionGate::kNominalCompressRate;
    BOOST_TEST(v.ratio_needed == 1.0 / (1.0 - 0.125e9 / ct), boost::test_tools::tolerance(1e-6));
    // Then the compressors are measured (0.5 GB/s per thread): that rate rules.
    const auto& m = gate.update(sample(0.4, 0.125e9, 64u << 20, 0.5e9));
    BOOST_TEST(m.compress_rate_measured);
    BOOST_TEST(m.compress_rate == 0.5e9, boost::test_tools::tolerance(1e-6));
    BOOST_TEST(m.ratio_needed == 1.0 / (1.0 - 0.125e9 / 1e9), boost::test_tools::tolerance(1e-6));
}

BOOST_AUTO_TEST_CASE(gate_fast_link_stays_raw)
{
    CompressionGate gate(2);
    // 10 Gbit/s against nominal compressors: raw, and they are never measured.
    for (double t = 0.1; t < 3; t += 0.1) {
        const auto& v = gate.update(sample(t, 1.25e9));
        BOOST_TEST(!v.compress());
        BOOST_TEST(!std::isfinite(v.ratio_needed));
    }
    BOOST_TEST(gate.verdict().why().find("outruns") != std::string::npos);
    // Loopback with measured fast compressors (0.8 GB/s x 2) at 2.8 GB/s: raw.
    CompressionGate lo(2);
    BOOST_TEST(!lo.update(sample(0.5, 2.8e9, 64u << 20, 0.8e9)).compress());
}

BOOST_AUTO_TEST_CASE(gate_cpu_bound_receiver_is_not_a_slow_link)
{
    CompressionGate gate(2);
    // The writers' busy time says 100 MB/s, as a slow link would; but the
    // receiver's window held the sender back 80% of the time: the
    // destination is the bottleneck, compressing would only load it more.
    GateSample g = sample(0.5, 0.1e9, 32u << 20, 0.5e9);
    g.tcp_busy_s = 0.5;
    g.tcp_rwnd_limited_s = 0.4;
    const auto& v = gate.update(g);
    BOOST_TEST(!v.compress());
    BOOST_TEST(v.destination_bound == 0.8, boost::test_tools::tolerance(1e-9));
    BOOST_TEST(v.why().find("destination is the bottleneck") != std::string::npos);
    // An interval too short to judge keeps the verdict.
    g = sample(0.52, 0.1e9, 32u << 20, 0.5e9);
    g.tcp_busy_s = 0.52;
    g.tcp_rwnd_limited_s = 0.40;
    BOOST_TEST(!gate.update(g).compress());
    // The destination keeps up again (5% of the next interval): the link
    // is the bottleneck, compression goes back on.
    g = sample(1.0, 0.1e9, 32u << 20, 0.5e9);
    g.tcp_busy_s = 1.0;
    g.tcp_rwnd_limited_s = 0.425;
    const auto& w = gate.update(g);
    BOOST_TEST(w.destination_bound == 0.05, boost::test_tools::tolerance(1e-9));
    BOOST_TEST(w.compress());
    // Without a clock the share of time the sockets were busy is unknown.
    BOOST_TEST(w.link_busy == -1.0);
    // Not a TCP socket (libxl's pipe): the rule alone, no destination figure.
    CompressionGate pipe(2);
    const auto& p = pipe.update(sample(0.5, 0.1e9, 32u << 20, 0.5e9));
    BOOST_TEST(p.compress());
    BOOST_TEST(p.destination_bound == -1.0);
}

BOOST_AUTO_TEST_CASE(gate_destination_on_this_host_stays_raw)
{
    // Over loopback the writers wait for a destination that shares the
    // cores: 200 MB/s looks like a link slower than two compressors, but
    // every compressed byte costs the destination's CPU too.  Raw, with the
    // reason; the same figures from a remote destination compress.
    GateSample g = sample(0.5, 0.2e9, 32u << 20, 0.5e9);
    g.same_host = true;
    CompressionGate gate(2);
    const auto& v = gate.update(g);
    BOOST_TEST(!v.compress());
    BOOST_TEST((v.reason == GateVerdict::Reason::same_host));
    BOOST_TEST(v.link_rate == 0.2e9, boost::test_tools::tolerance(0.01));
    BOOST_TEST(v.why().find("on this host") != std::string::npos, v.why());
    g.same_host = false;
    CompressionGate remote(2);
    BOOST_TEST(remote.update(g).compress());
}

BOOST_AUTO_TEST_CASE(gate_reports_how_busy_the_link_was)
{
    // A scripted clock: two channels, each with data in flight 0.3 s of
    // every 0.5 s of wall time (a link waiting for its sender): 60% busy.
    CompressionGate gate(2);
    GateSample g = sample(0, 0.1e9);
    g.channels = 2;
    g.now_s = 10.0;
    g.tcp_busy_s = g.tcp_rwnd_limited_s = 0;
    gate.update(g);
    BOOST_TEST(gate.verdict().link_busy == -1.0); // one instant: nothing to judge
    for (int i = 1; i <= 3; ++i) {
        g = sample(0.5 * i, 0.1e9);
        g.channels = 2;
        g.now_s = 10.0 + 0.5 * i;
        g.tcp_busy_s = 0.6 * i; // both channels together
        g.tcp_rwnd_limited_s = 0;
        gate.update(g);
        BOOST_TEST(gate.verdict().link_busy == 0.6, boost::test_tools::tolerance(1e-9));
        BOOST_TEST(gate.verdict().destination_bound == 0.0);
    }
}

BOOST_AUTO_TEST_CASE(gate_follows_a_link_that_changes_speed)
{
    CompressionGate gate(2);
    GateSample g;
    // 2 s at 1 Gbit/s: compress.
    for (int i = 1; i <= 20; ++i) {
        g.write_s += 0.1;
        g.wire_bytes += std::uint64_t(0.1 * 0.125e9);
        gate.update(g);
    }
    BOOST_TEST(gate.verdict().compress());
    // The link becomes 10 Gbit/s: within one interval the new rate rules
    // (an average since the start would still say ~1.5 Gbit/s after 0.5 s).
    for (int i = 1; i <= 5; ++i) {
        g.write_s += 0.1;
        g.wire_bytes += std::uint64_t(0.1 * 1.25e9);
        gate.update(g);
    }
    BOOST_TEST(gate.verdict().link_rate > 1e9);
    BOOST_TEST(!gate.verdict().compress());
    // And back to 1 Gbit/s: compression resumes.
    for (int i = 1; i <= 5; ++i) {
        g.write_s += 0.1;
        g.wire_bytes += std::uint64_t(0.1 * 0.125e9);
        gate.update(g);
    }
    BOOST_TEST(gate.verdict().link_rate == 0.125e9, boost::test_tools::tolerance(0.01));
    BOOST_TEST(gate.verdict().compress());
}

BOOST_AUTO_TEST_CASE(verdict_reaches_the_region_policy)
{
    CompressionPolicy pol(CompressionConfig{}, 1 << 20);
    const Bytes text = pages_of(PageKind::text, 16);
    pol.set_verdict(false, 2.0);
    BOOST_TEST(!pol.should_compress(0, text));
    BOOST_TEST(!std::isfinite(pol.ratio_needed()));
    pol.set_verdict(true, 2.0);
    BOOST_TEST(pol.should_compress(0, text));
    pol.record(0, 65536, 65536 * 2 / 3); // ratio 1.5 < 2: region goes raw
    BOOST_TEST(!pol.should_compress(16, text));
}

namespace {

// A run on a scripted clock: every step of `dt` seconds the writers are busy
// all of it and move `link` bytes/s, the workers compress `compress_in`
// bytes at `crate` bytes/s per thread; the gate is asked, as the pipeline
// asks it, and updated when due().  Returns how many updates it took.
struct Script {
    CompressionGate gate{2};
    GateSample g;
    int updates = 0;

    Script() { g.now_s = 100.0; }
    void run(double seconds, double link, double dt = 0.01, std::uint64_t compress_in = 0, double crate = 0)
    {
        for (double t = 0; t < seconds - 1e-9; t += dt) {
            g.now_s += dt;
            g.write_s += dt;
            g.wire_bytes += std::uint64_t(dt * link);
            g.compress_in += compress_in;
            g.compress_s += crate > 0 ? double(compress_in) / crate : 0;
            if (gate.due(g.now_s)) {
                gate.update(g);
                ++updates;
            }
        }
    }
    const GateVerdict& verdict() const { return gate.verdict(); }
};

} // namespace

BOOST_AUTO_TEST_CASE(gate_updates_at_most_every_interval)
{
    CompressionGate gate(2);
    BOOST_TEST(gate.due(-1.0)); // no clock: every sample counts
    BOOST_TEST(gate.due(5.0));  // the first sample
    GateSample g = sample(0.016, 0.125e9); // 2 MiB out: no link estimate yet
    g.now_s = 5.0;
    gate.update(g);
    BOOST_TEST(gate.due(5.001)); // until there is one, every sample counts
    g = sample(0.1, 0.125e9);
    g.now_s = 5.0;
    gate.update(g);
    BOOST_TEST(gate.verdict().link_rate > 0.0);
    BOOST_TEST(!gate.due(5.0 + CompressionGate::kUpdateInterval / 2));
    BOOST_TEST(gate.due(5.0 + CompressionGate::kUpdateInterval));
    // Asked every 10 ms for 2 s: every time until the first 4 MiB went out
    // (34 ms at 1 Gbit/s), then one update per interval; the verdict still
    // follows the link (1 Gbit/s: compress).
    Script s;
    s.run(2.0, 0.125e9);
    BOOST_TEST(s.updates <= 4 + int(2.0 / CompressionGate::kUpdateInterval) + 1);
    BOOST_TEST(s.updates >= int(2.0 / CompressionGate::kUpdateInterval) / 2);
    BOOST_TEST(s.verdict().compress());
}

BOOST_AUTO_TEST_CASE(gate_verdict_turns_regions_off_on_a_fast_link)
{
    // Measured compressors (0.8 GB/s per thread: igzip level 1 on text) on
    // links of three speeds, the verdict handed to a region policy as the
    // pipeline hands it.
    const Bytes text = pages_of(PageKind::text, 16);
    const std::uint64_t per_step = 8u << 20;
    const double C = 0.8e9;
    auto policy_after = [&](Script& s, CompressionPolicy& pol) {
        pol.set_verdict(s.verdict().compress(), s.verdict().ratio_needed);
    };
    CompressionPolicy pol(CompressionConfig{}, 1 << 20);
    Script s;
    // 1 Gbit/s: compress everything that shrinks.
    s.run(1.0, 0.125e9, 0.01, per_step, C);
    BOOST_TEST(s.verdict().compress_rate_measured);
    policy_after(s, pol);
    BOOST_TEST(pol.link_bound());
    BOOST_TEST(pol.ratio_needed() < 1.2);
    BOOST_TEST(pol.should_compress(0, text));
    // Loopback, faster than both compressors: never.
    s.run(1.0, 2.8e9, 0.01, per_step, C);
    BOOST_TEST((s.verdict().reason == GateVerdict::Reason::link_outruns));
    policy_after(s, pol);
    BOOST_TEST(!pol.link_bound());
    BOOST_TEST(!pol.should_compress(0, text));
    // 10 Gbit/s: only regions reaching 1 / (1 - 1.25/1.6) = 4.57 pay.
    s.run(1.0, 1.25e9, 0.01, per_step, C);
    policy_after(s, pol);
    BOOST_TEST(pol.link_bound());
    BOOST_TEST(pol.ratio_needed() == 1.0 / (1.0 - 1.25 / 1.6), boost::test_tools::tolerance(0.01));
    BOOST_TEST(pol.should_compress(0, text));
    pol.record(0, 65536, 65536 / 3); // ratio 3 < 4.57: region goes raw
    BOOST_TEST(!pol.should_compress(16, text));
    BOOST_TEST(pol.should_compress(256, text)); // other regions still try
    pol.record(256, 65536, 65536 / 6);          // ratio 6: stays on
    BOOST_TEST(pol.should_compress(272, text));
    // The link slows down again: back on, at a lower bar.
    s.run(1.0, 0.1e9, 0.01, per_step, C);
    policy_after(s, pol);
    BOOST_TEST(pol.link_bound());
    BOOST_TEST(pol.ratio_needed() < 1.2);
}

BOOST_AUTO_TEST_CASE(gate_slow_link_sends_incompressible_regions_raw)
{
    // The link is the bottleneck, so the gate says compress; a region of
    // random data is still sent raw after its entropy probe and skips
    // probing for the rest of it, while a text region keeps compressing.
    Script s;
    s.run(1.0, 0.125e9);
    BOOST_REQUIRE(s.verdict().compress());
    CompressionPolicy pol(CompressionConfig{}, 1 << 20);
    pol.set_verdict(s.verdict().compress(), s.verdict().ratio_needed);
    const Bytes random = pages_of(PageKind::random, 16, 7);
    const Bytes text = pages_of(PageKind::text, 16);
    int compressed_random = 0;
    for (Pfn g = 0; g < 16; ++g) // one 1 MiB region of random data
        compressed_random += pol.should_compress(g * 16, random);
    BOOST_TEST(compressed_random == 0);
    BOOST_TEST(pol.probes() < 8u); // not one probe per group
    for (Pfn g = 16; g < 32; ++g) // the next region: text
        BOOST_TEST(pol.should_compress(g * 16, text));
}

BOOST_AUTO_TEST_CASE(always_and_none)
{
    CompressionConfig cfg;
    cfg.always = true;
    CompressionPolicy pol(cfg, 1024);
    const Bytes random = pages_of(PageKind::random, 16);
    pol.record(0, random.size(), 0);
    // --always-compress ignores the gate: even a link that outruns the
    // compressors (measured at 1 MB/s) leaves it compressing.
    Script s;
    s.run(1.0, 2.8e9, 0.01, 1u << 20, 1e6);
    BOOST_REQUIRE(!s.verdict().compress());
    pol.set_verdict(s.verdict().compress(), s.verdict().ratio_needed);
    for (int i = 0; i < 10; ++i)
        BOOST_TEST(pol.should_compress(0, random));

    CompressionConfig off;
    off.algorithm = Algorithm::none;
    CompressionPolicy p2(off, 1024);
    BOOST_TEST(!p2.should_compress(0, pages_of(PageKind::text, 1)));
}

BOOST_AUTO_TEST_SUITE_END()
