// Fuzz target: the record layer and every body parser of stream/wire.*,
// both directions, called directly (fast: no sockets, no threads).
//
// Input: flags:u8, nr_pages:u16, then a stream (magic + records).
//   flags bit 0: recompute every record's CRC before reading (reaches the
//                body parsers behind the CRC check)
//   flags bit 1: the stream is a reply stream (destination -> source magic)
//   flags bit 2: skip the record layer: the rest of the input is one body,
//                given to the parser chosen by flags >> 4
//   flags bit 3 (bit 2 clear): an encrypted connection (docs/stream-format.md,
//                Encryption): records are opened with fuzz_key(), AES-256-GCM,
//                or ChaCha20-Poly1305 if bit 4 is set; with bit 0 the input's
//                records are clear and sealed first (instead of fixing CRCs)
// Checked beyond "no crash": what a parser accepts obeys the rules the
// format promises (docs/stream-format.md), e.g. every pfn of an accepted
// batch is < nr_pages and every data span lies inside the record body.
#include "tests/fuzz/fuzz_common.hpp"
#include "tests/fuzz/fuzz_sealed.hpp"

#include "stream/wire.hpp"

#include <algorithm>

using namespace fastmig;
using namespace fastmig::fuzz;

namespace {

constexpr std::size_t kMaxInput = 1 << 20;

void check_batch(const wire::PageBatch& b, std::span<const std::uint8_t> body, std::uint64_t nr_pages)
{
    FUZZ_ASSERT(!b.pages.empty() && b.pages.size() <= wire::kMaxBatchPages);
    FUZZ_ASSERT(b.data.size() == b.pages.size() && b.group_pages.size() == b.pages.size());
    std::size_t bytes = 16 + 8 * b.pages.size();
    std::uint64_t pages = 0;
    std::size_t open = 0; // continuations still allowed in the current group
    for (std::size_t i = 0; i < b.pages.size(); ++i) {
        const auto& d = b.pages[i];
        const auto& s = b.data[i];
        FUZZ_ASSERT(d.pfn < nr_pages);
        const bool run = d.encoding == wire::PageEncoding::zero_run || d.encoding == wire::PageEncoding::free_run;
        // A run's length counts pages: it has no data.
        FUZZ_ASSERT(run ? s.empty() : s.size() == d.length);
        pages += run ? d.length : 1;
        if (!s.empty())
            FUZZ_ASSERT(s.data() >= body.data() && s.data() + s.size() <= body.data() + body.size());
        bytes += s.size();
        switch (d.encoding) {
        case wire::PageEncoding::zero:
        case wire::PageEncoding::free: FUZZ_ASSERT(d.length == 0 && b.group_pages[i] == 1); break;
        case wire::PageEncoding::raw: FUZZ_ASSERT(d.length == kPageSize && b.group_pages[i] == 1); break;
        case wire::PageEncoding::zero_run:
        case wire::PageEncoding::free_run:
            // The receiver trusts this: every page of the run exists and
            // belongs to the channel of its first pfn.
            FUZZ_ASSERT(d.length >= 2 && d.length <= wire::kMaxRun && b.group_pages[i] == 1);
            FUZZ_ASSERT(d.length <= nr_pages - d.pfn);
            FUZZ_ASSERT((d.pfn >> wire::kChannelRegionShift) == ((d.pfn + d.length - 1) >> wire::kChannelRegionShift));
            break;
        case wire::PageEncoding::xbzrle:
            FUZZ_ASSERT(d.length >= 1 && d.length <= wire::kMaxEncodedPage && b.group_pages[i] == 1);
            break;
        case wire::PageEncoding::deflate:
            if (b.group_pages[i] == 0) {
                FUZZ_ASSERT(open > 0 && d.length == 0);
                --open;
            } else {
                const std::size_t n = b.group_pages[i];
                FUZZ_ASSERT(n >= 1 && n <= wire::kMaxGroupPages && i + n <= b.pages.size());
                FUZZ_ASSERT(d.length >= 1 && d.length <= n * wire::kMaxEncodedPage);
                open = n - 1;
                // The receiver trusts this: the n - 1 next pages are continuations.
                for (std::size_t j = 1; j < n; ++j)
                    FUZZ_ASSERT(b.pages[i + j].encoding == wire::PageEncoding::deflate && b.group_pages[i + j] == 0);
            }
            break;
        default: fuzz_fail("parse_page_batch accepted an unknown encoding");
        }
        if (d.encoding != wire::PageEncoding::deflate)
            FUZZ_ASSERT(open == 0);
    }
    FUZZ_ASSERT(open == 0);
    FUZZ_ASSERT(bytes == body.size());
    FUZZ_ASSERT(pages == b.page_count);
}

void parse_body(unsigned which, std::span<const std::uint8_t> body, std::uint64_t nr_pages)
{
    wire::PageBatch batch;
    switch (which % 13) {
    case 0: wire::parse_end(body); FUZZ_ASSERT(body.empty()); break;
    case 1: {
        auto h = wire::parse_header(body);
        FUZZ_ASSERT(h.nr_pages >= 1 && h.nr_pages <= kMaxPages && h.domain_name.size() <= wire::kMaxNameLength);
        break;
    }
    case 2:
        wire::parse_page_batch(body, nr_pages, batch);
        check_batch(batch, body, nr_pages);
        wire::check_batch_features(batch, wire::kFeatureDeflate | wire::kFeatureXbzrle);
        break;
    case 3: wire::parse_round_end(body); break;
    case 4: {
        auto ps = wire::parse_platform_state(body);
        FUZZ_ASSERT(ps.data.size() <= wire::kMaxStateBlob && ps.data.size() + 8 == body.size());
        break;
    }
    case 5: FUZZ_ASSERT(wire::parse_accept(body).message.size() <= wire::kMaxMessageLength); break;
    case 6: FUZZ_ASSERT(wire::parse_done(body).message.size() <= wire::kMaxMessageLength); break;
    case 7: wire::parse_round_ack(body); break;
    case 8: {
        auto c = wire::parse_channels(body);
        FUZZ_ASSERT(c.count >= 1 && c.count <= wire::kMaxChannels);
        break;
    }
    case 9: {
        auto h = wire::parse_channel_hello(body);
        FUZZ_ASSERT(h.index >= 1 && h.index < wire::kMaxChannels);
        break;
    }
    case 10: wire::parse_ready(body); break;
    case 11: wire::parse_commit(body); FUZZ_ASSERT(body.empty()); break;
    default: break;
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    Input in(data, size);
    const std::uint8_t flags = in.u8();
    const std::uint64_t nr_pages = 1 + std::uint64_t{in.u16()};
    auto rest = in.rest();
    try {
        if (flags & 4) {
            // A body straight from the input, whatever its size: the body
            // parsers must not rely on the record layer's limits.
            parse_body(flags >> 4, rest, nr_pages);
            return 0;
        }
        // Fenced: a read past the end of the stream is reported by ASan.
        // (Sealing adds a 16-byte tag to records of at least 16 bytes: at
        // most twice the input.)
        static Fenced buf(2 * kMaxInput);
        const bool keyed = flags & 8;
        const auto suite = flags & 16 ? auth::Suite::chacha20_poly1305 : auth::Suite::aes256_gcm;
        auto in = rest.first(std::min(rest.size(), kMaxInput));
        std::span<std::uint8_t> s;
        if (keyed && (flags & 1)) {
            s = buf.copy(seal_stream(in, 8, suite));
        } else {
            s = buf.copy(in);
            if (flags & 1)
                fix_crcs(s, 8);
        }
        wire::MemorySource src(s);
        wire::read_magic(src, flags & 2 ? wire::kReplyMagic : wire::kSourceMagic);
        wire::RecordReader reader(src);
        if (keyed)
            reader.set_verifier(std::make_unique<auth::RecordOpener>(suite, fuzz_key()));
        for (;;) {
            const std::uint64_t before = reader.bytes_read();
            auto rec = reader.read();
            // The reader's accounting and its buffer stay within the input.
            FUZZ_ASSERT(reader.bytes_read() > before && reader.bytes_read() + 8 <= s.size());
            FUZZ_ASSERT(rec.body.size() <= wire::kMaxRecordBody);
            try {
                parse_body(static_cast<unsigned>(rec.type), rec.body, nr_pages);
            } catch (const StreamError&) {
                // A refused body: the next record is still framed correctly.
            }
            if (rec.type == wire::RecordType::end) {
                verbose("wire: read up to END");
                break;
            }
        }
    } catch (const StreamError& e) {
        // Refused: the expected outcome for almost every input.
        verbose("wire", &e);
    }
    // Anything else (Error, bad_alloc, std::length_error...) escapes and is
    // reported by libFuzzer as a crash: a parser must answer StreamError.
    return 0;
}
