// Writes the seed corpora of the fuzz targets (tests/fuzz/README.md): valid
// streams and answers built with the project's own encoders, in the input
// layout each target documents.  Deterministic: the same seeds every run,
// so they need not be committed.
//
// Usage: make-seeds DIR   (creates DIR/wire, DIR/codec, DIR/receiver, DIR/sender,
// DIR/xenstate, DIR/outcome, DIR/hints)
#include "evtchn-ipc/free_hints.hpp"
#include "stream/codec/codec.hpp"
#include "stream/domain/xen/bytes.hpp"
#include "stream/domain/xen/hvm_records.hpp"
#include "stream/domain/xen/pv_records.hpp"
#include "stream/outcome_store.hpp"
#include "stream/wire.hpp"
#include "stream/wire_outcome.hpp"
#include "tests/fuzz/fuzz_sealed.hpp"
#include "tests/unit/iovec_bytes.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace fastmig;
using namespace fastmig::wire;
namespace fs = std::filesystem;

namespace {

using fastmig::test::gather;

using Bytes = std::vector<std::uint8_t>;

void append(Bytes& to, const Bytes& from) { to.insert(to.end(), from.begin(), from.end()); }

// `Bytes{flags} + stream`: a target's input, its leading bytes then a stream.
Bytes operator+(Bytes a, const Bytes& b)
{
    append(a, b);
    return a;
}

unsigned written = 0;

void save(const fs::path& dir, const std::string& name, const Bytes& b)
{
    fs::create_directories(dir);
    std::ofstream f(dir / name, std::ios::binary);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    if (!f)
        throw std::runtime_error("cannot write " + (dir / name).string());
    ++written;
}

// Page contents: text-like (compresses), pseudo-random (does not).
Bytes page(Pfn pfn, unsigned version)
{
    Bytes p(kPageSize);
    std::uint64_t x = 0x9e3779b97f4a7c15ull ^ (pfn * 0x100000001b3ull) ^ version;
    for (std::size_t i = 0; i < kPageSize; ++i) {
        if (pfn % 2 == 0) {
            p[i] = static_cast<std::uint8_t>("migrate the page of the guest "[(i + pfn) % 30]);
        } else {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            p[i] = static_cast<std::uint8_t>(x);
        }
    }
    if (version)
        for (unsigned k = 0; k < 6; ++k)
            p[(pfn * 131 + k * 577 + version * 17) % kPageSize] ^= static_cast<std::uint8_t>(0x40 + k);
    return p;
}

Bytes magic() { return Bytes(kSourceMagic.begin(), kSourceMagic.end()); }
Bytes reply_magic() { return Bytes(kReplyMagic.begin(), kReplyMagic.end()); }

// The records of one channel of a migration: round 0 sends every pfn of
// `pfns` (zero, free, raw, deflate groups, spread over encodings by pfn),
// round 1 re-sends some as XBZRLE deltas, a deflate group and a zero page.
// With `sparse`, only a few pfns of every 256 carry data and the rest are
// zero pages, so that a domain large enough for two channels (pfn 512 and
// up travel on channel 1) still makes a small seed.
Bytes channel_rounds(const std::vector<Pfn>& pfns, codec::Algorithm algo, bool sparse = false)
{
    auto kind = [&](Pfn p) { return sparse && p % 256 >= 5 ? 0 : p % 5; };
    Bytes s;
    auto comp = codec::make_compressor(algo == codec::Algorithm::none ? codec::Algorithm::igzip : algo, 1);
    std::vector<Bytes> keep; // page data must outlive finish()
    BatchEncoder enc;
    // Round 0.
    enc.begin(0);
    std::size_t i = 0;
    std::uint64_t count = 0;
    auto flush = [&] {
        if (!enc.empty())
            append(s, gather(enc.finish()));
        enc.begin(0);
    };
    while (i < pfns.size()) {
        if (enc.room() < 4)
            flush();
        const Pfn p = pfns[i];
        switch (kind(p)) {
        case 0:
        case 1: {
            // Consecutive zero (or free) pages go as one run, as the sender
            // sends them (ZERO_RUN / FREE_RUN; a run of one is ZERO / FREE).
            const auto k = kind(p);
            std::size_t j = i + 1;
            while (j < pfns.size() && kind(pfns[j]) == k && extends_run(p, j - i, pfns[j]))
                ++j;
            enc.add_run(p, static_cast<std::uint32_t>(j - i), k == 0 ? PageEncoding::zero : PageEncoding::free);
            count += j - i;
            i = j;
            break;
        }
        case 2:
            keep.push_back(page(p, 0));
            enc.add(p, PageEncoding::raw, keep.back());
            ++i;
            ++count;
            break;
        default: {
            // A group of up to 3 pages (fewer at the end).
            std::vector<Pfn> group;
            Bytes raw;
            while (group.size() < 3 && i < pfns.size()) {
                group.push_back(pfns[i]);
                append(raw, page(pfns[i], 0));
                ++i;
            }
            Bytes out(codec::kMaxEncodedGroup);
            std::size_t n = comp->compress(raw, out, group.size() * kMaxEncodedPage);
            out.resize(n ? n : 1);
            keep.push_back(out);
            enc.add_group(group, keep.back());
            count += group.size();
        }
        }
    }
    flush();
    append(s, encode_round_end({0, count}));
    // Round 1: deltas against round 0's content (raw pages, pfn % 5 == 2),
    // a zero page over a written one, a group of one.
    enc.begin(1);
    count = 0;
    for (Pfn p : pfns) {
        if (kind(p) == 2 && count < 6) {
            Bytes d(kMaxEncodedPage);
            std::size_t n = codec::xbzrle_encode(page(p, 0), page(p, 1), d, d.size());
            if (!n)
                continue;
            d.resize(n);
            keep.push_back(d);
            enc.add(p, PageEncoding::xbzrle, keep.back());
            ++count;
        }
    }
    for (Pfn p : pfns)
        if (kind(p) == 3) {
            Bytes raw = page(p, 1);
            Bytes out(codec::kMaxEncodedGroup);
            std::size_t n = comp->compress(raw, out, kMaxEncodedPage);
            if (n) {
                out.resize(n);
                keep.push_back(out);
                enc.add(p, PageEncoding::deflate, keep.back());
                ++count;
            }
            break;
        }
    for (Pfn p : pfns)
        if (kind(p) == 2) {
            enc.add_zero(p);
            ++count;
            break;
        }
    if (!enc.empty())
        append(s, gather(enc.finish()));
    append(s, encode_round_end({1, count}));
    return s;
}

StreamHeader header(std::uint64_t pages, std::uint64_t features)
{
    StreamHeader h;
    h.nr_pages = pages;
    h.features = features | kFeatureRuns; // round 0 sends its zero and free pages as runs
    h.domain_kind = 1; // sim
    h.domain_name = "seed";
    return h;
}

// A whole single-channel migration, as the receiver target takes it.
Bytes one_channel_stream(std::uint64_t pages, std::uint64_t features, codec::Algorithm algo)
{
    Bytes s = magic();
    append(s, encode_header(header(pages, features)));
    std::vector<Pfn> pfns;
    for (Pfn p = 0; p < pages; ++p)
        pfns.push_back(p);
    append(s, channel_rounds(pfns, algo));
    const Bytes blob = {1, 2, 3, 4, 5, 6, 7};
    if (features & kFeatureEarlyState)
        append(s, encode_early_state(0x10001, blob));
    append(s, encode_platform_state(7, blob));
    append(s, encode_platform_state(8, {}));
    append(s, encode_end());
    append(s, encode_commit());
    return s;
}

void u16(Bytes& b, std::size_t v)
{
    b.push_back(static_cast<std::uint8_t>(v));
    b.push_back(static_cast<std::uint8_t>(v >> 8));
}

void receiver_seeds(const fs::path& dir, const fs::path& wire_dir)
{
    const std::uint64_t all = kFeatureVerify | kFeatureDeflate | kFeatureXbzrle;
    unsigned n = 0;
    for (auto algo : {codec::Algorithm::igzip, codec::Algorithm::zlib})
        for (std::uint64_t pages : {1u, 16u, 40u}) {
            Bytes s = one_channel_stream(pages,
                                         pages == 16   ? all & ~kFeatureVerify
                                         : pages == 40 ? all | kFeatureEarlyState
                                                       : all,
                                         algo);
            Bytes in = {0}; // CRCs as encoded
            append(in, s);
            save(dir, "stream-" + std::to_string(n), in);
            // The wire target takes the same stream (flags, nr_pages,
            // stream); the small ones only, which it runs much faster.
            if (s.size() < 64 * 1024) {
                Bytes w = {0};
                u16(w, pages - 1);
                append(w, s);
                save(wire_dir, "stream-" + std::to_string(n), w);
                // Encrypted (flags bit 3; bit 4: ChaCha20-Poly1305): as sealed
                // on the wire (bit 0 clear), and clear for the harness to seal
                // after mutation (bit 0 set).
                for (std::uint8_t cipher : {0, 16}) {
                    const auto suite = cipher ? auth::Suite::chacha20_poly1305 : auth::Suite::aes256_gcm;
                    Bytes sealed = {static_cast<std::uint8_t>(8 | cipher)};
                    u16(sealed, pages - 1);
                    append(sealed, fuzz::seal_stream(s, 8, suite));
                    save(wire_dir, "sealed-" + std::to_string(n) + (cipher ? "-chacha" : "-aes"), sealed);
                    w[0] = static_cast<std::uint8_t>(8 | 1 | cipher);
                    save(wire_dir, "to-seal-" + std::to_string(n) + (cipher ? "-chacha" : "-aes"), w);
                }
            }
            ++n;
        }
    // Two channels: pfns 0..511 and 1024.. on channel 0, 512..1023 on 1.
    {
        const std::uint64_t pages = 1030;
        const std::uint64_t session = 0x1234;
        Bytes c0 = magic();
        append(c0, encode_header(header(pages, all | kFeatureChannels)));
        append(c0, encode_channels({2, session}));
        std::vector<Pfn> p0, p1;
        for (Pfn p = 0; p < pages; ++p)
            (channel_of(p, 2) == 0 ? p0 : p1).push_back(p);
        append(c0, channel_rounds(p0, codec::Algorithm::igzip, true));
        append(c0, encode_platform_state(7, {}));
        append(c0, encode_end());
        append(c0, encode_commit());
        Bytes c1 = magic();
        append(c1, encode_channel_hello({1, session}));
        append(c1, channel_rounds(p1, codec::Algorithm::igzip, true));
        append(c1, encode_end());
        if (c1.size() > 0xffff)
            throw std::runtime_error("channel 1 seed too large for its u16 length");
        Bytes in = {2}; // one extra connection
        u16(in, c1.size());
        append(in, c1);
        append(in, c0);
        save(dir, "channels-2", in);
    }
    // Refused at once: a header the receiver will not take.
    {
        Bytes s = magic();
        append(s, encode_header(header(1u << 20, 0))); // larger than the harness's host
        save(dir, "too-large", Bytes{0} + s);
    }
}

void sender_seeds(const fs::path& dir, const fs::path& wire_dir)
{
    for (unsigned cfg = 0; cfg < 64; ++cfg) {
        if (cfg & 2)
            continue; // CRC fixing: the seeds are already right
        const unsigned channels = (cfg & 1) ? 2 : 1;
        const unsigned rounds = 1 + ((cfg >> 4) & 3) + 1; // precopy + stop-and-copy
        Bytes r0 = reply_magic();
        append(r0, encode_accept({kAcceptOk, ""}));
        for (unsigned r = 0; r < rounds; ++r)
            append(r0, encode_round_ack({r, 10}));
        append(r0, encode_ready({96, 4096, 0x1234}));
        append(r0, encode_done({0, 1, 96, 4096, 0x1234, ""}));
        Bytes in = {static_cast<std::uint8_t>(cfg)};
        if (channels == 2) {
            Bytes r1 = reply_magic();
            for (unsigned r = 0; r < rounds; ++r)
                append(r1, encode_round_ack({r, 0}));
            u16(in, r1.size());
            append(in, r1);
        }
        append(in, r0);
        save(dir, "answers-" + std::to_string(cfg), in);
        if (cfg < 4) {
            Bytes w = {2, 95, 0}; // reply stream, 96 pages
            append(w, r0);
            save(wire_dir, "answers-" + std::to_string(cfg), w);
        }
    }
    // A refusal; a destination that gives up mid-way; DONE with an error
    // after COMMIT.
    {
        Bytes r = reply_magic();
        append(r, encode_accept({kAcceptNoMemory, "domain of 384 KiB exceeds the receiver's limit"}));
        Bytes in = {0};
        append(in, r);
        save(dir, "refused", in);
        Bytes g = reply_magic();
        append(g, encode_accept({kAcceptOk, ""}));
        append(g, encode_done({1, 0, 0, 0, 0, "malformed stream: the destination gave up"}));
        save(dir, "gave-up", Bytes{0} + g);
        Bytes c = reply_magic();
        append(c, encode_accept({kAcceptOk, ""}));
        append(c, encode_round_ack({0, 96}));
        append(c, encode_round_ack({1, 9}));
        append(c, encode_ready({96, 4096, 0}));
        append(c, encode_done({1, 0, 0, 0, 0, "cannot start the domain"}));
        save(dir, "failed-after-commit", Bytes{0} + c);
    }
}

void codec_seeds(const fs::path& dir)
{
    unsigned n = 0;
    for (unsigned v = 1; v < 4; ++v) {
        Bytes d(kMaxEncodedPage);
        std::size_t len = codec::xbzrle_encode(page(2, 0), page(2, v), d, d.size());
        d.resize(len);
        save(dir, "xbzrle-" + std::to_string(n++), Bytes{0} + d);
    }
    for (auto algo : {codec::Algorithm::igzip, codec::Algorithm::zlib})
        for (unsigned pages : {1u, 3u, 16u}) {
            Bytes raw;
            for (unsigned p = 0; p < pages; ++p)
                append(raw, page(p, 0));
            Bytes out(codec::kMaxEncodedGroup);
            auto comp = codec::make_compressor(algo, 1);
            std::size_t len = comp->compress(raw, out, pages * kMaxEncodedPage);
            out.resize(len);
            // flags: both inflaters compared, pages - 1 in the top bits.
            Bytes in = {static_cast<std::uint8_t>(3 | (pages - 1) << 4)};
            append(in, out);
            save(dir, "deflate-" + std::to_string(n++), in);
        }
}

// fuzz_outcome: a query of each record the target's store holds (and one
// it does not), each OUTCOME answer, each record state, an id.
void outcome_seeds(const fs::path& dir)
{
    auto id = [](std::uint8_t n) {
        MigrationId m{};
        m[0] = n;
        return m;
    };
    Bytes magic(kSourceMagic.begin(), kSourceMagic.end());
    for (std::uint8_t n = 1; n <= 5; ++n) {
        save(dir, "query-" + std::to_string(n), Bytes{0} + magic + encode_outcome_query(id(n)));
        OutcomeReply r;
        r.answer = static_cast<OutcomeAnswer>(1 + n % 3);
        r.id = id(n);
        r.verify_digest = n;
        r.message = std::string(n * 3, 'm');
        Bytes rec = encode_outcome(r);
        save(dir, "answer-" + std::to_string(n), Bytes{1} + Bytes(rec.begin() + 16, rec.begin() + 16 + kOutcomeFixed + r.message.size()));
    }
    save(dir, "header-refused", Bytes{0} + magic + encode_header({kVersion, kPageShift, 16, 0, 1, "x"}));
    for (std::uint32_t st = 1; st <= 4; ++st) {
        OutcomeEntry e;
        e.id = id(static_cast<std::uint8_t>(st));
        e.state = static_cast<OutcomeState>(st);
        e.updated_unix_ms = 1700000000000ull;
        e.domain = "sim:" + std::to_string(st);
        save(dir, "record-" + std::to_string(st), Bytes{2} + encode_outcome_entry(e));
    }
    auto m = id(9);
    save(dir, "id", Bytes{3} + Bytes(m.begin(), m.end()));
}

// Hint answers (fuzz_hints.cpp): a scan of `batches` batches of `per`
// one-page ranges, as dom0's end would receive them, with seq/batch patched
// by the target (flag 4) or exact (seq 77, as the target asks).
Bytes hint_script(std::uint8_t flags, std::uint16_t pages_minus_1, const std::vector<std::vector<ipc::hints::Range>>& b)
{
    using namespace ipc::hints;
    Bytes in = {flags, std::uint8_t(pages_minus_1), std::uint8_t(pages_minus_1 >> 8)};
    std::uint64_t total = 0, pages = 0;
    for (const auto& x : b)
        for (const auto& r : x) {
            ++total;
            pages += r.count;
        }
    for (std::size_t i = 0; i < b.size(); ++i) {
        AnswerHeader h;
        h.seq = 77;
        h.batch = std::uint32_t(i);
        h.count = std::uint32_t(b[i].size());
        h.flags = i + 1 == b.size() ? kLastBatch : 0;
        h.total_ranges = total;
        h.total_pages = pages;
        Bytes a(kAnswerHeaderSize + kRangeSize * b[i].size());
        encode_answer(h, b[i], a);
        in.push_back(std::uint8_t(a.size()));
        in.push_back(std::uint8_t(a.size() >> 8));
        append(in, a);
    }
    return in;
}

void hints_seeds(const fs::path& dir)
{
    using namespace ipc::hints;
    save(dir, "one-batch", hint_script(4, 999, {{{0, 10}, {20, 5}, {900, 100}}}));
    save(dir, "exact-seq", hint_script(0, 999, {{{0, 10}, {20, 5}}, {{30, 1}}}));
    std::vector<std::vector<Range>> many;
    for (std::uint64_t i = 0; i < 4; ++i) {
        many.emplace_back();
        for (std::uint64_t k = 0; k < 30; ++k)
            many.back().push_back({(i * 30 + k) * 3, 2});
    }
    save(dir, "four-batches", hint_script(5, 4095, many));
    save(dir, "empty-scan", hint_script(4, 10, {{}}));
    save(dir, "past-the-guest", hint_script(4, 99, {{{90, 20}}}));
    save(dir, "overlap", hint_script(4, 999, {{{0, 10}}, {{5, 1}}}));
    {
        AnswerHeader h;
        h.type = AnswerType::refused;
        h.seq = 77;
        h.flags = kLastBatch;
        h.reason = RefuseReason::page_poisoning;
        Bytes a(kAnswerHeaderSize);
        encode_answer(h, {}, a);
        Bytes in = {4, 99, 0, std::uint8_t(a.size()), 0};
        save(dir, "refused", in + a);
    }
    // The agent's end: requests.
    for (auto [name, q] : {std::pair<const char*, Request>{"req-scan", {RequestType::scan, 3, 0, 50000, 100}},
                           {"req-next", {RequestType::next, 3, 1, 50000, 1}},
                           {"req-done", {RequestType::done, 3, 0, 50000, 0}},
                           {"req-small-guest", {RequestType::scan, 4, 0, 11, 2}}}) {
        Bytes r(kRequestSize);
        encode_request(q, r);
        save(dir, name, Bytes{8, 0, 0} + r);
    }
}

} // namespace

// fuzz_xen_state.cpp's input: mode, then a body or { u32 type, u16 length,
// bytes } blobs; each as the Xen backend's source writes it.
void xen_state_seeds(const fs::path& dir)
{
    using namespace fastmig::xen;
    std::vector<HvmParam> params = {{hvm_param::kStorePfn, 0xfeffc},
                                    {hvm_param::kIoreqServerPfn, 0xfeff0},
                                    {hvm_param::kNrIoreqServerPages, 8},
                                    {hvm_param::kConsolePfn, 0xfefff},
                                    {hvm_param::kViridian, 1}};
    const auto pb = encode_hvm_params(params);
    save(dir, "params", Bytes{0} + pb.data);
    const std::string keys = "hpet=0\ntimeoffset=-3600\nvcpu/number=2\nvcpu/0/affinity=0110\n"
                             "vcpu/1/affinity=1\nvcpu/weight=512\nvcpu/cap=50\ngeneration-id=123:456\n";
    save(dir, "platform-keys", Bytes{5} + Bytes(keys.begin(), keys.end()));
    Bytes ctx;
    auto desc = [&](std::uint16_t code, std::uint16_t inst, const Bytes& body) {
        xen::append<std::uint16_t>(ctx, code);
        xen::append<std::uint16_t>(ctx, inst);
        xen::append<std::uint32_t>(ctx, std::uint32_t(body.size()));
        append(ctx, body);
    };
    Bytes header;
    for (std::uint32_t v : {hvm_ctx::kMagic, hvm_ctx::kVersion, 0u, 0u, 0x800f12u, 2400000u})
        xen::append<std::uint32_t>(header, v);
    desc(hvm_ctx::kCodeHeader, 0, header);
    desc(hvm_ctx::kCodeCpu, 0, Bytes(1024, 0x11));
    desc(hvm_ctx::kCodeCpu, 1, Bytes(1024, 0x22));
    desc(3, 0, Bytes(16, 0x33));
    desc(hvm_ctx::kCodeEnd, 0, {});
    save(dir, "context", Bytes{1} + ctx);
    HoleMap h(1u << 20);
    for (Pfn p = 0xa0; p < 0xc0; ++p)
        h.set(p, true);
    for (Pfn p = 0xf0000; p < 0xf0100; ++p)
        h.set(p, true);
    auto hb = h.encode(1);
    save(dir, "holes", Bytes{2} + hb[0].data);
    auto framed = [](const std::vector<StateBlob>& bs) {
        Bytes out;
        for (const auto& b : bs) {
            xen::append<std::uint32_t>(out, b.type);
            xen::append<std::uint16_t>(out, std::uint16_t(b.data.size()));
            append(out, b.data);
        }
        return out;
    };
    std::vector<StateBlob> hvm = {encode_tsc_info({0, 2400000, 7, 1}), {rec::kHvmContext, ctx}, pb};
    for (auto& b : hb)
        hvm.push_back(b);
    save(dir, "hvm-state", Bytes{3} + framed(hvm));
    std::vector<StateBlob> pv = {encode_pv_info(8, 4), encode_tsc_info({0, 2400000, 7, 1})};
    P2mFrames f;
    f.end_pfn = 4095;
    f.frame_pfns = {1, 2, 3, 4, 5, 6, 7, 8};
    pv.push_back(encode_p2m_frames(f));
    pv.push_back({rec::kSharedInfo, Bytes(shinfo::kSize, 0)});
    pv.push_back(encode_vcpu_blob(rec::kX86PvVcpuBasic, 0, Bytes(vcpu_ctx::kSize, 0)));
    for (auto& b : PfnTypeMap(4096).encode(16))
        pv.push_back(b);
    save(dir, "pv-state", Bytes{4} + framed(pv));
}

int main(int argc, char** argv)
{
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    try {
        const fs::path dir = argv[1];
        receiver_seeds(dir / "receiver", dir / "wire");
        sender_seeds(dir / "sender", dir / "wire");
        codec_seeds(dir / "codec");
        xen_state_seeds(dir / "xenstate");
        outcome_seeds(dir / "outcome");
        hints_seeds(dir / "hints");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "make-seeds: %s\n", e.what());
        return 1;
    }
    std::printf("make-seeds: %u seeds in %s\n", written, argv[1]);
    return 0;
}
