// The free-page hint protocol (evtchn-ipc/free_hints.hpp) and its two ends
// (evtchn-ipc/hint_session.hpp) over the process flavour of evtchn-ipc: a
// memfd region and two eventfd doorbells, the agent on a thread.  The Xen
// flavour moves the same bytes over granted pages and an event channel.
#define BOOST_TEST_MODULE free_hints
#include <boost/test/unit_test.hpp>

#include "evtchn-ipc/doorbell.hpp"
#include "evtchn-ipc/hint_session.hpp"
#include "evtchn-ipc/shared_region.hpp"

#include <atomic>
#include <thread>

using namespace fastmig::ipc;
using namespace fastmig::ipc::hints;
using namespace std::chrono_literals;
using Status = AnswerParser::Status;

namespace {

std::vector<std::uint8_t> answer(const AnswerHeader& h, const std::vector<Range>& r)
{
    std::vector<std::uint8_t> b(kAnswerHeaderSize + kRangeSize * r.size());
    BOOST_REQUIRE(encode_answer(h, r, b) == b.size());
    return b;
}

AnswerHeader header(std::uint32_t seq, std::uint32_t batch, const std::vector<Range>& r, bool last,
                    std::uint64_t total_ranges, std::uint64_t total_pages)
{
    AnswerHeader h;
    h.seq = seq;
    h.batch = batch;
    h.count = std::uint32_t(r.size());
    h.flags = last ? kLastBatch : 0;
    h.total_ranges = total_ranges;
    h.total_pages = total_pages;
    return h;
}

// Feeds one batch per element; returns the parser's last status.
Status feed_all(AnswerParser& p, const std::vector<std::vector<Range>>& batches, std::uint64_t total_ranges,
                std::uint64_t total_pages, std::uint32_t seq = 7)
{
    Status s = Status::more;
    for (std::size_t i = 0; i < batches.size(); ++i)
        s = p.feed(answer(header(seq, std::uint32_t(i), batches[i], i + 1 == batches.size(), total_ranges,
                                 total_pages),
                          batches[i]));
    return s;
}

// Both ends of a mailbox in one process: dom0's end rings `to_agent`, the
// agent's rings `to_dom0` (an event channel is one port both ways; two
// eventfds are the process equivalent).
struct Pair {
    SharedRegion region;
    Doorbell to_agent = Doorbell::create(), to_dom0 = Doorbell::create();
    MailboxEnd dom0, agent;
    explicit Pair(std::size_t bytes) : region(SharedRegion::create("hints", bytes))
    {
        std::span<std::uint8_t> r(static_cast<std::uint8_t*>(region.data()), region.size());
        dom0 = {r, [this] { to_agent.notify(); }, [this](std::chrono::milliseconds t) { return to_dom0.wait(t); }};
        agent = {r, [this] { to_dom0.notify(); }, [this](std::chrono::milliseconds t) { return to_agent.wait(t); }};
    }
};

// An agent thread serving until stopped.
struct AgentThread {
    std::atomic<bool> stop{false};
    std::atomic<int> answered{0};
    std::thread t;
    AgentThread(Pair& p, HintServer& s)
    {
        t = std::thread([&] {
            while (!stop)
                if (p.agent.wait(20ms) && s.handle(p.agent))
                    ++answered;
        });
    }
    ~AgentThread()
    {
        stop = true;
        t.join();
    }
};

std::vector<Range> every_other(std::uint64_t n) // ranges of 1 page at even pfns
{
    std::vector<Range> r;
    for (std::uint64_t i = 0; i < n; ++i)
        r.push_back({2 * i, 1});
    return r;
}

} // namespace

BOOST_AUTO_TEST_CASE(request_round_trips_and_is_checked)
{
    std::uint8_t b[kRequestSize];
    BOOST_TEST(encode_request({RequestType::next, 9, 3, 1000, 50}, b) == kRequestSize);
    Request q;
    std::string why;
    BOOST_TEST(decode_request(b, q, why));
    BOOST_TEST((q.type == RequestType::next && q.seq == 9u && q.batch == 3u && q.nr_pages == 1000u));
    BOOST_TEST(!decode_request({b, kRequestSize - 1}, q, why));
    b[6] = 9; // type
    BOOST_TEST(!decode_request(b, q, why));
    BOOST_TEST(why.find("type 9") != std::string::npos);
    encode_request({RequestType::scan, 1, 2, 1000, 50}, b);
    BOOST_TEST(!decode_request(b, q, why)); // a scan starts at batch 0
    encode_request({RequestType::scan, 1, 0, 1000, 0}, b);
    BOOST_TEST(!decode_request(b, q, why));
    b[4] = 2; // version
    BOOST_TEST(!decode_request(b, q, why));
}

BOOST_AUTO_TEST_CASE(parser_accepts_batches_that_add_up)
{
    AnswerParser p(1000, 7);
    std::vector<std::vector<Range>> b = {{{0, 10}, {20, 5}}, {{25, 5}, {100, 900}}};
    BOOST_TEST((feed_all(p, b, 4, 920) == Status::complete));
    BOOST_TEST(p.ranges().size() == 4u);
    BOOST_TEST(p.total_pages() == 920u);
    // Nothing after complete changes anything.
    BOOST_TEST((p.feed(answer(header(7, 2, {}, true, 4, 920), {})) == Status::complete));
}

BOOST_AUTO_TEST_CASE(parser_accepts_an_empty_scan)
{
    AnswerParser p(1000, 7);
    BOOST_TEST((feed_all(p, {{}}, 0, 0) == Status::complete));
    BOOST_TEST(p.ranges().empty());
}

BOOST_AUTO_TEST_CASE(parser_refuses_ranges_outside_the_guest)
{
    for (Range bad : {Range{1000, 1}, Range{990, 11}, Range{5, ~0ull}, Range{~0ull, 2}}) {
        AnswerParser p(1000, 7);
        BOOST_TEST((feed_all(p, {{{0, 1}, bad}}, 2, 2) == Status::invalid));
        BOOST_TEST(p.ranges().empty());
        BOOST_TEST_INFO(p.error());
        BOOST_TEST(p.error().find("range 1") != std::string::npos);
    }
    AnswerParser p(1000, 7);
    BOOST_TEST((feed_all(p, {{{0, 0}}}, 1, 0) == Status::invalid)); // an empty range
}

BOOST_AUTO_TEST_CASE(parser_refuses_overlapping_or_unsorted_ranges_even_across_batches)
{
    AnswerParser a(1000, 7);
    BOOST_TEST((feed_all(a, {{{0, 10}, {9, 1}}}, 2, 11) == Status::invalid));
    BOOST_TEST(a.error().find("overlaps") != std::string::npos);
    AnswerParser b(1000, 7);
    BOOST_TEST((feed_all(b, {{{50, 1}}, {{10, 1}}}, 2, 2) == Status::invalid));
    BOOST_TEST(b.error().find("batch 1, range 0") != std::string::npos);
    AnswerParser c(1000, 7); // the same range twice
    BOOST_TEST((feed_all(c, {{{5, 1}, {5, 1}}}, 2, 2) == Status::invalid));
    AnswerParser d(1000, 7); // touching is fine
    BOOST_TEST((feed_all(d, {{{5, 1}, {6, 1}}}, 2, 2) == Status::complete));
}

BOOST_AUTO_TEST_CASE(parser_refuses_truncated_and_malformed_answers)
{
    auto full = answer(header(7, 0, {{0, 1}, {4, 1}}, true, 2, 2), {{0, 1}, {4, 1}});
    for (std::size_t n : {std::size_t(0), std::size_t(10), kAnswerHeaderSize, full.size() - 1}) {
        AnswerParser p(100, 7);
        BOOST_TEST((p.feed({full.data(), n}) == Status::invalid));
    }
    auto bad = full;
    bad[0] ^= 1; // magic
    AnswerParser p1(100, 7);
    BOOST_TEST((p1.feed(bad) == Status::invalid));
    bad = full;
    bad[18] = 0x80; // an unknown flag
    AnswerParser p2(100, 7);
    BOOST_TEST((p2.feed(bad) == Status::invalid));
    BOOST_TEST(p2.error().find("flags") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(parser_refuses_a_wrong_sequence_or_batch)
{
    AnswerParser a(100, 7);
    BOOST_TEST((feed_all(a, {{{0, 1}}}, 1, 1, 8) == Status::invalid));
    BOOST_TEST(a.error().find("not to 7") != std::string::npos);
    AnswerParser b(100, 7);
    BOOST_TEST((b.feed(answer(header(7, 1, {{0, 1}}, true, 1, 1), {{0, 1}})) == Status::invalid));
    AnswerParser c(100, 7); // a batch repeated
    auto b0 = answer(header(7, 0, {{0, 1}}, false, 2, 2), {{0, 1}});
    BOOST_TEST((c.feed(b0) == Status::more));
    BOOST_TEST((c.feed(b0) == Status::invalid));
}

BOOST_AUTO_TEST_CASE(parser_catches_a_lying_agent)
{
    AnswerParser a(1000, 7); // totals change between batches
    BOOST_TEST((a.feed(answer(header(7, 0, {{0, 1}}, false, 2, 2), {{0, 1}})) == Status::more));
    BOOST_TEST((a.feed(answer(header(7, 1, {{5, 1}}, true, 2, 3), {{5, 1}})) == Status::invalid));
    BOOST_TEST(a.error().find("totals changed") != std::string::npos);
    AnswerParser b(1000, 7); // fewer ranges than announced
    BOOST_TEST((feed_all(b, {{{0, 1}}}, 2, 1) == Status::invalid));
    AnswerParser c(1000, 7); // more pages than announced
    BOOST_TEST((feed_all(c, {{{0, 5}}}, 1, 4) == Status::invalid));
    AnswerParser d(1000, 7); // more ranges than announced
    BOOST_TEST((feed_all(d, {{{0, 1}, {3, 1}}}, 1, 2) == Status::invalid));
    AnswerParser e(1000, 7); // more free pages than the guest has
    BOOST_TEST((feed_all(e, {{{0, 1}}}, 1, 1001) == Status::invalid));
    AnswerParser f(1000, 7); // more ranges than pages
    BOOST_TEST((feed_all(f, {{{0, 1}}}, 1001, 1) == Status::invalid));
    AnswerParser g(1000, 7); // a refusal is not an attack, and ends the scan
    AnswerHeader r;
    r.type = AnswerType::refused;
    r.seq = 7;
    r.reason = RefuseReason::page_poisoning;
    BOOST_TEST((g.feed(answer(r, {})) == Status::refused));
    BOOST_TEST((g.reason() == RefuseReason::page_poisoning));
}

BOOST_AUTO_TEST_CASE(parser_bounds_batches)
{
    // An empty batch that is not the last would let an agent be asked forever.
    AnswerParser a(1000, 7);
    BOOST_TEST((a.feed(answer(header(7, 0, {}, false, 3, 3), {})) == Status::invalid));
    BOOST_TEST(a.error().find("empty and not the last") != std::string::npos);
    // With one range a batch, the batch limit stops a long answer.
    AnswerParser b(1000, 7, Limits{1000, 3});
    Status s = Status::more;
    for (std::uint32_t i = 0; i < 5 && s == Status::more; ++i)
        s = b.feed(answer(header(7, i, {{2ull * i, 1}}, false, 10, 10), {{2ull * i, 1}}));
    BOOST_TEST((s == Status::invalid));
    BOOST_TEST(b.next_batch() == 3u);
    // The announced total is bounded before anything is reserved for it.
    AnswerParser c(1ull << 40, 7, Limits{100, 10});
    BOOST_TEST((c.feed(answer(header(7, 0, {{0, 1}}, false, 101, 101), {{0, 1}})) == Status::invalid));
}

BOOST_AUTO_TEST_CASE(session_moves_many_batches_over_a_small_region)
{
    Pair pair(4096); // 248 ranges a batch
    BOOST_TEST(ranges_per_batch(4096) == 248u);
    const auto ranges = every_other(1000);
    HintServer server([&](std::uint64_t) { return ScanResult{ranges, {}, false, 1234}; });
    AgentThread agent(pair, server);
    HintResult r = request_free_ranges(pair.dom0, 4000, 1, 5000ms);
    BOOST_TEST_INFO(r.why);
    BOOST_TEST(r.ok());
    BOOST_TEST(r.ranges == ranges);
    BOOST_TEST(r.pages == 1000u);
    BOOST_TEST(r.batches == 5u); // 4 x 248 + 8
    BOOST_TEST(r.agent_scan_ns == 1234u);
    // A second session with the next sequence number.
    HintResult again = request_free_ranges(pair.dom0, 4000, 2, 5000ms);
    BOOST_TEST(again.ok());
    BOOST_TEST(again.ranges.size() == 1000u);
}

BOOST_AUTO_TEST_CASE(agent_drops_what_lies_past_dom0s_pfn_count)
{
    Pair pair(4096);
    HintServer server([](std::uint64_t) { return ScanResult{{{0, 4}, {90, 20}, {150, 3}}, {}, false, 0}; });
    AgentThread agent(pair, server);
    HintResult r = request_free_ranges(pair.dom0, 100, 1, 5000ms);
    BOOST_TEST(r.ok());
    BOOST_TEST((r.ranges == std::vector<Range>{{0, 4}, {90, 10}}));
}

BOOST_AUTO_TEST_CASE(session_reports_a_refusal)
{
    Pair pair(4096);
    HintServer server([](std::uint64_t) {
        ScanResult s;
        s.refused = true;
        s.refuse = RefuseReason::no_kpageflags;
        return s;
    });
    AgentThread agent(pair, server);
    HintResult r = request_free_ranges(pair.dom0, 100, 1, 5000ms);
    BOOST_TEST((r.outcome == HintResult::Outcome::refused));
    BOOST_TEST(r.why.find("kpageflags") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_silent_agent_costs_the_timeout_and_no_more)
{
    Pair pair(4096);
    auto t0 = std::chrono::steady_clock::now();
    HintResult r = request_free_ranges(pair.dom0, 100, 1, 150ms);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    BOOST_TEST((r.outcome == HintResult::Outcome::timed_out));
    BOOST_TEST(ms >= 140.0);
    BOOST_TEST(ms < 5000.0);
    BOOST_TEST(r.why.find("150 ms") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(an_agent_that_rings_without_answering_cannot_hold_dom0)
{
    Pair pair(4096);
    std::atomic<bool> stop{false};
    std::thread noisy([&] {
        while (!stop) {
            pair.agent.notify(); // rings, never writes an answer
            std::this_thread::sleep_for(1ms);
        }
    });
    HintResult r = request_free_ranges(pair.dom0, 100, 1, 100ms);
    stop = true;
    noisy.join();
    BOOST_TEST((r.outcome == HintResult::Outcome::timed_out));
    BOOST_TEST(r.why.find("wake-ups without an answer") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_hostile_agent_gets_no_hints_and_a_clear_cause)
{
    Pair pair(4096);
    // A hostile agent: answers batch 0 with a range past the guest.
    std::thread evil([&] {
        if (!pair.agent.wait(5000ms))
            return;
        AnswerHeader h = header(1, 0, {{50, 100}}, true, 1, 100);
        std::span<std::uint8_t> slot = pair.agent.region.subspan(kAnswerOffset);
        encode_answer(h, std::vector<Range>{{50, 100}}, slot);
        pair.agent.notify();
    });
    HintResult r = request_free_ranges(pair.dom0, 100, 1, 5000ms);
    evil.join();
    BOOST_TEST((r.outcome == HintResult::Outcome::invalid));
    BOOST_TEST(r.ranges.empty());
    BOOST_TEST(r.why.find("goes past the guest's 100 pages") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(agent_refuses_a_next_without_a_scan)
{
    Pair pair(4096);
    HintServer server([](std::uint64_t) { return ScanResult{}; });
    encode_request({RequestType::next, 5, 1, 100, 10}, pair.dom0.region);
    std::string why;
    BOOST_TEST(server.handle(pair.agent, &why));
    AnswerHeader h;
    std::string err;
    BOOST_TEST(decode_answer_header(pair.dom0.region.subspan(kAnswerOffset), 4096, h, err));
    BOOST_TEST((h.type == AnswerType::refused && h.reason == RefuseReason::no_scan));
    // The same request again (a second ring) is not answered twice.
    BOOST_TEST(!server.handle(pair.agent));
}

BOOST_AUTO_TEST_CASE(xenstore_keys_are_parsed_strictly)
{
    std::vector<std::uint32_t> refs;
    std::string why;
    BOOST_TEST(parse_ring_refs("8 9 4000000000", refs, why));
    BOOST_TEST((refs == std::vector<std::uint32_t>{8, 9, 4000000000u}));
    BOOST_TEST(format_ring_refs(refs) == "8 9 4000000000");
    for (const char* bad : {"", " ", "8  9", "8 ", "-1", "0", "8 x", "99999999999", "5000000000"})
        BOOST_TEST(!parse_ring_refs(bad, refs, why), bad);
    std::string many;
    for (int i = 1; i <= 65; ++i)
        many += (i > 1 ? " " : "") + std::to_string(i);
    BOOST_TEST(!parse_ring_refs(many, refs, why));
    BOOST_TEST(why.find("more than 64") != std::string::npos);
    std::uint32_t port;
    BOOST_TEST(parse_port("17", port, why));
    BOOST_TEST(port == 17u);
    for (const char* bad : {"", "0", "131072", "1e3", "17\n"})
        BOOST_TEST(!parse_port(bad, port, why), bad);
    std::uint16_t v;
    BOOST_TEST(parse_protocol("1", v, why));
    BOOST_TEST(!parse_protocol("2", v, why));
    BOOST_TEST(why.find("protocol 2") != std::string::npos);
    BOOST_TEST(!parse_protocol("one", v, why));
}
