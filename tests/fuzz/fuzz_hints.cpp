// Fuzz target: the free-page hint protocol (evtchn-ipc/free_hints.hpp,
// hint_session.hpp), both ends, with the peer's bytes from the input.
//
// Input: flags:u8, nr_pages-1:u16, then
//   flags & 8 == 0 (dom0's end): answers, each `len:u16 + bytes`.  A
//     scripted agent writes the next answer into the answer slot whenever
//     dom0 rings, so request_free_ranges runs its real copy-out and parser
//     over them.  flags & 4: the script patches each answer's sequence and
//     batch numbers to the ones asked for (as fix-CRCs does for the wire
//     target: otherwise nearly every mutation stops at that check).
//     flags & 3: region of 1 + (flags & 3) pages.
//   flags & 8 (the agent's end): the rest is the request slot, handled by a
//     HintServer whose scan returns fixed ranges.
// Checked beyond "no crash": hints are only ever ascending, disjoint, inside
// nr_pages and add up to the page count reported; any other outcome carries
// no range; dom0 never reads or writes outside the region (it is fenced);
// the agent's answer, when it gives one, parses.
#include "tests/fuzz/fuzz_common.hpp"

#include "evtchn-ipc/hint_session.hpp"

using namespace fastmig;
using namespace fastmig::fuzz;
using namespace fastmig::ipc::hints;

namespace {

struct Exhausted {};

void check_hints(const HintResult& r, std::uint64_t nr_pages)
{
    if (!r.ok()) {
        FUZZ_ASSERT(r.ranges.empty());
        FUZZ_ASSERT(!r.why.empty());
        return;
    }
    std::uint64_t end = 0, pages = 0;
    for (const Range& x : r.ranges) {
        FUZZ_ASSERT(x.count > 0);
        FUZZ_ASSERT(x.first >= end);
        FUZZ_ASSERT(x.first < nr_pages && x.count <= nr_pages - x.first);
        end = x.first + x.count;
        pages += x.count;
    }
    FUZZ_ASSERT(pages == r.pages);
}

void dom0_end(Input& in, std::uint8_t flags, std::uint64_t nr_pages)
{
    const std::size_t bytes = (1 + (flags & 3)) * kRegionPageSize;
    static Fenced buf(kMaxRegionPages * kRegionPageSize);
    auto region = buf.take(bytes, 0);
    std::vector<std::span<const std::uint8_t>> script;
    while (in.left() && script.size() < 200) {
        std::size_t len = in.u16();
        script.push_back(in.take(len));
    }
    std::size_t next = 0;
    bool pending = false;
    ipc::hints::MailboxEnd m;
    m.region = region;
    m.notify = [&] {
        // dom0 asked (or said done): the agent's turn.
        std::uint8_t q[kRequestSize];
        std::memcpy(q, region.data(), kRequestSize);
        Request req;
        std::string why;
        if (decode_request({q, kRequestSize}, req, why) && req.type == RequestType::done)
            return;
        if (next >= script.size())
            return;
        auto a = script[next++];
        const std::size_t n = std::min(a.size(), region.size() - kAnswerOffset);
        std::memcpy(region.data() + kAnswerOffset, a.data(), n);
        if ((flags & 4) && n >= 16) {
            wr32(region.data() + kAnswerOffset + 8, req.seq);
            wr32(region.data() + kAnswerOffset + 12, req.batch);
        }
        pending = true;
    };
    m.wait = [&](std::chrono::milliseconds) {
        if (!pending)
            throw Exhausted{};
        pending = false;
        return true;
    };
    try {
        HintResult r = request_free_ranges(m, nr_pages, 77, std::chrono::seconds(10), Limits{4096, 64});
        check_hints(r, nr_pages);
        verbose((std::string(outcome_name(r.outcome)) + ": " + r.why).c_str());
    } catch (const Exhausted&) {
        verbose("script exhausted");
    }
}

void agent_end(Input& in)
{
    static Fenced buf(kRegionPageSize);
    auto region = buf.take(kRegionPageSize, 0);
    auto req = in.rest();
    std::memcpy(region.data(), req.data(), std::min(req.size(), kRequestSize));
    bool rang = false;
    ipc::hints::MailboxEnd m{region, [&] { rang = true; }, [](std::chrono::milliseconds) { return true; }};
    HintServer server([](std::uint64_t) { return ScanResult{{{0, 3}, {10, 1}, {12, 40000}}, {}, false, 5}; });
    const bool answered = server.handle(m);
    FUZZ_ASSERT(answered == rang);
    if (!answered)
        return;
    AnswerHeader h;
    std::string why;
    FUZZ_ASSERT(decode_answer_header(region.subspan(kAnswerOffset), region.size() - kAnswerOffset, h, why));
    Request q;
    if (h.type == AnswerType::ranges && h.batch == 0 && decode_request(region.first(kRequestSize), q, why)) {
        // What it answers is a valid first batch for dom0's parser.
        AnswerParser p(q.nr_pages, q.seq);
        FUZZ_ASSERT(p.feed(region.subspan(kAnswerOffset)) != AnswerParser::Status::invalid);
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    Input in(data, size);
    const std::uint8_t flags = in.u8();
    const std::uint64_t nr_pages = std::uint64_t(in.u16()) + 1;
    if (flags & 8)
        agent_end(in);
    else
        dom0_end(in, flags, nr_pages);
    return 0;
}
