// The Xen backend's use of free-page hints (stream/domain/xen/guest_hints.hpp)
// with fakes for what only Xen has: the agent is a HintServer (or a hostile
// stand-in) on a thread behind the process flavour of evtchn-ipc (a memfd
// region and two eventfds), and "the guest's RAM" is a predicate.  So the
// decisions the backend takes on a real guest run here: when it asks, what
// a silent, refusing or lying agent costs, and that no pfn outside the
// guest's RAM is ever skipped.
#define BOOST_TEST_MODULE guest_hints
#include <boost/test/unit_test.hpp>

#include "evtchn-ipc/doorbell.hpp"
#include "evtchn-ipc/shared_region.hpp"
#include "stream/domain/xen/guest_hints.hpp"
#include "stream/receiver.hpp"

#include <atomic>
#include <chrono>
#include <thread>

using namespace fastmig;
using namespace fastmig::xen;
using namespace fastmig::ipc;
using namespace fastmig::ipc::hints;
using namespace std::chrono_literals;

namespace {

// dom0's and the agent's ends of one mailbox in this process.
struct Pair {
    SharedRegion region = SharedRegion::create("guest-hints", 4096);
    Doorbell to_agent = Doorbell::create(), to_dom0 = Doorbell::create();
    MailboxEnd dom0, agent;
    Pair()
    {
        std::span<std::uint8_t> r(static_cast<std::uint8_t*>(region.data()), region.size());
        dom0 = {r, [this] { to_agent.notify(); }, [this](std::chrono::milliseconds t) { return to_dom0.wait(t); }};
        agent = {r, [this] { to_dom0.notify(); }, [this](std::chrono::milliseconds t) { return to_agent.wait(t); }};
    }
};

// An agent serving `ranges` until the test ends.
struct Agent {
    Pair& pair;
    HintServer server;
    std::atomic<bool> stop{false};
    std::atomic<int> scans{0};
    std::thread t;
    Agent(Pair& p, std::vector<Range> ranges, bool refuse = false)
        : pair(p), server([this, ranges, refuse](std::uint64_t) {
              ++scans;
              ScanResult s;
              s.ranges = ranges;
              s.refused = refuse;
              if (refuse)
                  s.refuse = RefuseReason::page_poisoning;
              return s;
          })
    {
        t = std::thread([this] {
            while (!stop)
                if (pair.agent.wait(20ms))
                    server.handle(pair.agent);
        });
    }
    ~Agent()
    {
        stop = true;
        t.join();
    }
};

ConnectAgent connect_to(Pair& p)
{
    return [&p](std::string&) -> std::optional<AgentLink> { return AgentLink{nullptr, &p.dom0, "test-agent 1"}; };
}

// RAM: every pfn but those in [hole_first, hole_end).
KeepRam ram_except(Pfn hole_first, Pfn hole_end)
{
    return [=](DirtyBitmap& h) {
        std::uint64_t n = 0;
        for (Pfn p = hole_first; p < hole_end && p < h.size(); ++p)
            if (h.test(p)) {
                h.clear(p);
                ++n;
            }
        return n;
    };
}

const KeepRam kAllRam = [](DirtyBitmap&) { return std::uint64_t{0}; };

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

} // namespace

BOOST_AUTO_TEST_CASE(free_ranges_become_bits_and_holes_are_dropped)
{
    Pair pair;
    Agent agent(pair, {{10, 20}, {100, 50}});
    DirtyBitmap out(1000);
    out.set(900); // already free (an HVM hole the backend found): stays
    auto rep = collect_guest_hints({}, false, 5, connect_to(pair), ram_except(110, 120), out);
    BOOST_TEST_MESSAGE(rep.line);
    BOOST_TEST(rep.used);
    BOOST_TEST(rep.hinted == 70u);
    BOOST_TEST(rep.dropped == 10u);
    BOOST_TEST(rep.added == 60u);
    BOOST_TEST(out.count() == 61u);
    BOOST_TEST(out.test(10));
    BOOST_TEST(out.test(29));
    BOOST_TEST(!out.test(30));
    BOOST_TEST(!out.test(110));
    BOOST_TEST(!out.test(119));
    BOOST_TEST(out.test(120));
    BOOST_TEST(out.test(900));
    BOOST_TEST(contains(rep.line, "precopy: free-page hints: agent 'test-agent 1' reported 70 free pages"));
    BOOST_TEST(contains(rep.line, "60 go as FREE, 10 dropped"));
}

BOOST_AUTO_TEST_CASE(not_asked_when_disabled_suspended_or_absent)
{
    Pair pair;
    Agent agent(pair, {{0, 10}});
    DirtyBitmap out(100);
    GuestHintOptions off;
    off.enabled = false;
    auto r1 = collect_guest_hints(off, false, 1, connect_to(pair), kAllRam, out);
    BOOST_TEST(contains(r1.line, "--no-agent-hints"));
    auto r2 = collect_guest_hints({}, true, 2, connect_to(pair), kAllRam, out);
    BOOST_TEST(contains(r2.line, "suspended"));
    ConnectAgent none = [](std::string& why) -> std::optional<AgentLink> {
        why = "no agent";
        return std::nullopt;
    };
    auto r3 = collect_guest_hints({}, false, 3, none, kAllRam, out);
    BOOST_TEST(r3.line == "precopy: free-page hints: no fastmig agent in the guest: none");
    ConnectAgent broken = [](std::string& why) -> std::optional<AgentLink> {
        why = "data/fastmig-agent/ring-ref: 65 references (1 to 64)";
        return std::nullopt;
    };
    auto r4 = collect_guest_hints({}, false, 4, broken, kAllRam, out);
    BOOST_TEST(contains(r4.line, "cannot reach the guest's agent (data/fastmig-agent/ring-ref"));
    ConnectAgent throws = [](std::string&) -> std::optional<AgentLink> {
        throw std::runtime_error("cannot open the grant-table device");
    };
    auto r5 = collect_guest_hints({}, false, 5, throws, kAllRam, out);
    BOOST_TEST(contains(r5.line, "cannot open the grant-table device"));
    for (const auto* r : {&r1, &r2, &r3, &r4, &r5}) {
        BOOST_TEST(!r->asked);
        BOOST_TEST(!r->used);
    }
    BOOST_TEST(agent.scans == 0);
    BOOST_TEST(out.count() == 0u);
}

BOOST_AUTO_TEST_CASE(a_refusing_agent_costs_nothing_but_a_line)
{
    Pair pair;
    Agent agent(pair, {{0, 10}}, true);
    DirtyBitmap out(100);
    auto rep = collect_guest_hints({}, false, 9, connect_to(pair), kAllRam, out);
    BOOST_TEST_MESSAGE(rep.line);
    BOOST_TEST(rep.asked);
    BOOST_TEST(!rep.used);
    BOOST_TEST(contains(rep.line, "declined"));
    BOOST_TEST(out.count() == 0u);
}

BOOST_AUTO_TEST_CASE(a_silent_agent_costs_the_timeout_and_no_more)
{
    Pair pair; // nobody answers
    DirtyBitmap out(100);
    GuestHintOptions o;
    o.timeout = 150ms;
    const auto t0 = std::chrono::steady_clock::now();
    auto rep = collect_guest_hints(o, false, 9, connect_to(pair), kAllRam, out);
    const auto took = std::chrono::steady_clock::now() - t0;
    BOOST_TEST_MESSAGE(rep.line);
    BOOST_TEST(!rep.used);
    BOOST_TEST(contains(rep.line, "did not answer within 150 ms"));
    BOOST_TEST(out.count() == 0u);
    // A bound, not a timing: generous for a loaded machine.
    BOOST_TEST(took < 5s);
}

BOOST_AUTO_TEST_CASE(a_hostile_agent_gets_no_hints_and_no_page_outside_the_guest)
{
    // Ranges past the guest, overlapping, and endless batches: each makes
    // the whole scan refused, with the cause in the line.
    struct Case {
        const char* name;
        std::vector<std::vector<Range>> batches;
        std::uint64_t total_ranges, total_pages;
        bool endless;
        const char* cause;
    } cases[] = {
        {"past the guest", {{{90, 20}}}, 1, 20, false, "past the guest"},
        {"overlapping", {{{10, 10}, {15, 10}}}, 2, 20, false, "overlaps"},
        {"endless", {{{0, 1}}}, 1, 1, true, "past the 50 announced"},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.name)
        {
            Pair pair;
            std::atomic<bool> stop{false};
            std::thread evil([&] {
                std::uint32_t batch = 0;
                while (!stop) {
                    if (!pair.agent.wait(20ms))
                        continue;
                    Request q;
                    std::string why;
                    if (!decode_request(pair.agent.region.first(kRequestSize), q, why) || q.type == RequestType::done)
                        continue;
                    // Endless: always "not the last", one new range a batch.
                    std::vector<Range> r = c.endless ? std::vector<Range>{{batch * 2 % 100, 1}}
                                                     : c.batches.at(std::min<std::size_t>(q.batch, c.batches.size() - 1));
                    AnswerHeader h;
                    h.seq = q.seq;
                    h.batch = q.batch;
                    h.count = std::uint32_t(r.size());
                    h.flags = c.endless ? 0 : kLastBatch;
                    h.total_ranges = c.endless ? 50 : c.total_ranges;
                    h.total_pages = c.endless ? 50 : c.total_pages;
                    encode_answer(h, r, pair.agent.region.subspan(kAnswerOffset));
                    ++batch;
                    pair.agent.notify();
                }
            });
            DirtyBitmap out(100);
            GuestHintOptions o;
            o.timeout = 2000ms;
            auto rep = collect_guest_hints(o, false, 77, connect_to(pair), kAllRam, out);
            stop = true;
            evil.join();
            BOOST_TEST_MESSAGE(rep.line);
            BOOST_TEST(rep.asked);
            BOOST_TEST(!rep.used);
            BOOST_TEST(out.count() == 0u);
            BOOST_TEST(contains(rep.line, "migrating without hints"));
            BOOST_TEST(contains(rep.line, c.cause));
        }
    }
}

BOOST_AUTO_TEST_CASE(a_failing_ram_check_costs_the_hints_not_the_migration)
{
    Pair pair;
    Agent agent(pair, {{0, 10}});
    DirtyBitmap out(100);
    KeepRam fails = [](DirtyBitmap&) -> std::uint64_t { throw std::runtime_error("cannot read the page types"); };
    auto rep = collect_guest_hints({}, false, 3, connect_to(pair), fails, out);
    BOOST_TEST(!rep.used);
    BOOST_TEST(contains(rep.line, "cannot read the page types"));
    BOOST_TEST(out.count() == 0u);
}

// The wait for the agent comes before round 0 and sends nothing, so it must
// fit, with the HVM hole scan before it (kHoleScanBudget, 5 s, xen_save.cpp),
// in a receiver's silence limit: the default with room to spare, the
// largest --agent-timeout-ms too.
BOOST_AUTO_TEST_CASE(the_wait_fits_in_a_receivers_silence_limit)
{
    const auto silence = fastmig::ReceiveOptions{}.io_timeout;
    const auto hole_scan = std::chrono::seconds(5);
    BOOST_TEST((GuestHintOptions{}.timeout + hole_scan) * 2 <= silence);
    BOOST_TEST(kMaxAgentTimeout + hole_scan < silence);
}
