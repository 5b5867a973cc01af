// fastmig-guest-agent's page scan (guest-agent/free_pages.cpp) on synthetic
// /proc/kpageflags files, the agent's answer to dom0 end to end over the
// process flavour of evtchn-ipc (the Xen flavour carries the same bytes),
// and its xenstore watch (guest-agent/xenbus_watch.cpp) against a fake
// xenbus device: one end of a socketpair, played as Linux's device plays it.
#define BOOST_TEST_MODULE guest_agent
#include <boost/test/unit_test.hpp>

#include "evtchn-ipc/doorbell.hpp"
#include "evtchn-ipc/hint_session.hpp"
#include "evtchn-ipc/shared_region.hpp"
#include "guest-agent/free_pages.hpp"
#include "guest-agent/xenbus_watch.hpp"
#include "tests/unit/xs_wire_fake.hpp"

#include <atomic>
#include <cstdlib>
#include <fcntl.h>
#include <cstring>
#include <random>
#include <poll.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

using namespace fastmig;
using namespace fastmig::ipc::hints;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t kBuddy = 1ull << agent::kKpfBuddy;

// A temporary file of flag words, removed on destruction.
struct FlagsFile {
    int fd = -1;
    explicit FlagsFile(const std::vector<std::uint64_t>& flags)
    {
        char path[] = "/tmp/fastmig-kpageflags.XXXXXX";
        fd = ::mkstemp(path);
        BOOST_REQUIRE(fd >= 0);
        ::unlink(path);
        BOOST_REQUIRE(::write(fd, flags.data(), flags.size() * 8) == ssize_t(flags.size() * 8));
    }
    ~FlagsFile() { ::close(fd); }
};

// The reference: one bit at a time.
std::vector<Range> reference(const std::vector<std::uint64_t>& f, std::uint64_t limit)
{
    std::vector<Range> r;
    for (std::uint64_t i = 0; i < std::min<std::uint64_t>(limit, f.size()); ++i) {
        if (!(f[i] & kBuddy))
            continue;
        if (!r.empty() && r.back().end() == i)
            ++r.back().count;
        else
            r.push_back({i, 1});
    }
    return r;
}

} // namespace

BOOST_AUTO_TEST_CASE(free_pages_coalesce_into_ranges_across_chunks)
{
    // Free blocks of several orders, single free pages, other flags on
    // used pages (slab, lru, nopage holes) that must not count.
    std::vector<std::uint64_t> f(5000, 0);
    for (int i = 0; i < 8; ++i)
        f[16 + i] = kBuddy;           // an order-3 block
    f[100] = kBuddy;                  // a lone page
    f[101] = 1ull << 7;               // slab
    f[102] = kBuddy | (1ull << 5);    // buddy with another bit
    for (int i = 1024; i < 2048; ++i) // an order-10 block
        f[i] = kBuddy;
    f[3000] = 1ull << agent::kKpfNopage;
    f[4999] = kBuddy;                 // the last pfn
    FlagsFile file(f);
    const std::vector<Range> want = {{16, 8}, {100, 1}, {102, 1}, {1024, 1024}, {4999, 1}};
    for (std::size_t chunk : {std::size_t(1), std::size_t(3), std::size_t(1000), std::size_t(65536)}) {
        agent::ScanStats st;
        auto r = agent::scan_kpageflags(file.fd, ~0ull, st, chunk);
        BOOST_TEST(r == want, "chunk " << chunk);
        BOOST_TEST(st.pfns == 5000u);
        BOOST_TEST(st.free == 1035u);
    }
    agent::ScanStats st;
    auto cut = agent::scan_kpageflags(file.fd, 1500, st, 1000); // dom0's pfn count ends mid-block
    BOOST_TEST((cut == std::vector<Range>{{16, 8}, {100, 1}, {102, 1}, {1024, 476}}));
    BOOST_TEST(st.pfns == 1500u);
}

BOOST_AUTO_TEST_CASE(random_flags_match_a_bit_by_bit_reference)
{
    std::mt19937_64 rng(19);
    std::vector<std::uint64_t> f(200000);
    bool run = false;
    for (auto& x : f) {
        if (rng() % 64 == 0)
            run = !run; // long runs and short gaps
        x = (run || rng() % 7 == 0 ? kBuddy : 0) | (rng() & 0xff);
    }
    FlagsFile file(f);
    agent::ScanStats st;
    auto r = agent::scan_kpageflags(file.fd, ~0ull, st, 4093);
    BOOST_TEST(r == reference(f, ~0ull));
    auto cut = agent::scan_kpageflags(file.fd, 77777, st, 4096);
    BOOST_TEST(cut == reference(f, 77777));
}

BOOST_AUTO_TEST_CASE(iomem_gives_the_whole_pages_of_top_level_system_ram)
{
    const std::string iomem = "00000000-00000fff : Reserved\n"
                              "00001000-0009fbff : System RAM\n" // ends mid-page: 0x9f is partial
                              "  00001000-00001fff : nested, not a range of its own\n"
                              "000a0000-000fffff : PCI Bus 0000:00\n"
                              "00100000-1fffffff : System RAM\n"
                              "  01000000-01ffffff : Kernel code\n"
                              "garbage line\n"
                              "zz-yy : System RAM\n"
                              "fc000000-fcffffff : System RAM\n" // beyond the limit below
                              "00200000-002fffff : System RAM\n"; // out of order: skipped
    auto s = agent::ram_spans_from_iomem(iomem, 0x20000);
    BOOST_TEST_REQUIRE(s.size() == 2u);
    BOOST_TEST(s[0].first == 1u);
    BOOST_TEST(s[0].count == 0x9eu); // pfns 1..0x9e: 0x9f is not whole
    BOOST_TEST(s[1].first == 0x100u);
    BOOST_TEST(s[1].count == 0x20000u - 0x100u);
    // The limit (dom0's pfn count) clips a span.
    auto cut = agent::ram_spans_from_iomem(iomem, 0x150);
    BOOST_TEST_REQUIRE(cut.size() == 2u);
    BOOST_TEST(cut[1].count == 0x50u);
    // Read without root, every address is 0: no map at all.
    BOOST_TEST(agent::ram_spans_from_iomem("00000000-00000000 : System RAM\n", ~0ull).empty());
    BOOST_TEST(agent::ram_spans_from_iomem("", ~0ull).empty());
}

BOOST_AUTO_TEST_CASE(a_scan_over_spans_reads_only_them)
{
    std::vector<std::uint64_t> f(3000);
    for (std::size_t i = 0; i < f.size(); ++i)
        f[i] = i % 3 ? kBuddy : 0; // free pages everywhere, holes included
    FlagsFile file(f);
    agent::ScanStats st;
    auto r = agent::scan_kpageflags(file.fd, std::vector<agent::PfnSpan>{{10, 20}, {2000, 5000}}, st, 7);
    BOOST_TEST(st.pfns == 20u + 1000u); // the second span ends with the file
    std::uint64_t free = 0;
    for (const auto& x : r) {
        const bool in_first = x.first >= 10 && x.end() <= 30;
        const bool in_second = x.first >= 2000 && x.end() <= 3000;
        BOOST_TEST((in_first || in_second), "range " << x.first << "+" << x.count << " outside the spans");
        free += x.count;
    }
    BOOST_TEST(free == st.free);
    BOOST_TEST(free == 14u + 667u);
}

BOOST_AUTO_TEST_CASE(an_unreadable_file_is_an_error_not_an_empty_scan)
{
    agent::ScanStats st;
    BOOST_CHECK_THROW(agent::scan_kpageflags(-1, 100, st), std::runtime_error);
}

BOOST_AUTO_TEST_CASE(page_poisoning_is_seen_on_the_command_line)
{
    BOOST_TEST(agent::cmdline_poisons_pages("ro quiet page_poison=1"));
    BOOST_TEST(agent::cmdline_poisons_pages("page_poison=on console=hvc0\n"));
    BOOST_TEST(!agent::cmdline_poisons_pages("ro quiet"));
    BOOST_TEST(!agent::cmdline_poisons_pages("page_poison=0 init_on_free=1"));
    BOOST_TEST(!agent::cmdline_poisons_pages("xpage_poison=1"));
}

BOOST_AUTO_TEST_CASE(the_agents_scan_reaches_dom0_intact)
{
    std::vector<std::uint64_t> f(1 << 16, 0);
    for (std::size_t i = 0; i < f.size(); i += 3)
        f[i] = kBuddy; // 21846 one-page ranges: several batches in 16 pages
    FlagsFile file(f);
    auto region = ipc::SharedRegion::create("hints", 16 * 4096);
    auto to_agent = ipc::Doorbell::create(), to_dom0 = ipc::Doorbell::create();
    std::span<std::uint8_t> r(static_cast<std::uint8_t*>(region.data()), region.size());
    MailboxEnd dom0{r, [&] { to_agent.notify(); }, [&](std::chrono::milliseconds t) { return to_dom0.wait(t); }};
    MailboxEnd agent_end{r, [&] { to_dom0.notify(); }, [&](std::chrono::milliseconds t) { return to_agent.wait(t); }};
    HintServer server([&](std::uint64_t nr_pages) {
        ScanResult s;
        agent::ScanStats st;
        s.ranges = agent::scan_kpageflags(file.fd, nr_pages, st);
        return s;
    });
    std::atomic<bool> stop{false};
    std::thread t([&] {
        while (!stop)
            if (agent_end.wait(20ms))
                server.handle(agent_end);
    });
    HintResult res = request_free_ranges(dom0, 60000, 3, 10000ms);
    stop = true;
    t.join();
    BOOST_TEST_INFO(res.why);
    BOOST_TEST(res.ok());
    BOOST_TEST(res.ranges == reference(f, 60000));
    BOOST_TEST(res.batches == 5u); // 20000 ranges, 4088 a batch
}

namespace {

using test::xs_message;
using test::xs_ok;
std::string event(const std::string& path, const std::string& token) { return test::xs_event(path, token); }

const std::string kPath = "data/fastmig-agent/event-channel";
const std::string kToken = "fastmig";

// The kernel's end of /dev/xen/xenbus: reads one whole request, then
// writes `answer` (in one write, or byte by byte).
struct FakeXenbus {
    int agent_fd = -1, dev_fd = -1;
    std::string request;
    std::thread t;
    FakeXenbus()
    {
        int sv[2];
        BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        agent_fd = sv[0];
        dev_fd = sv[1];
    }
    // close_after: hang up once the answer is written (the device gone).
    void serve(std::string answer, bool byte_by_byte = false, bool close_after = false)
    {
        t = std::thread([this, answer, byte_by_byte, close_after] {
            if (!test::read_xs_request(dev_fd, request))
                return;
            for (std::size_t i = 0; i < answer.size();) {
                const std::size_t k = byte_by_byte ? 1 : answer.size() - i;
                if (::write(dev_fd, answer.data() + i, k) != ssize_t(k))
                    return;
                i += k;
            }
            if (close_after)
                ::shutdown(dev_fd, SHUT_RDWR);
        });
    }
    void join()
    {
        if (t.joinable())
            t.join();
    }
    ~FakeXenbus()
    {
        join();
        if (dev_fd >= 0)
            ::close(dev_fd);
    }
};

} // namespace

BOOST_AUTO_TEST_CASE(the_watch_request_is_path_and_token_each_nul_terminated)
{
    const std::string m = agent::watch_request(kPath, kToken);
    std::uint32_t h[4];
    BOOST_REQUIRE_EQUAL(m.size(), agent::xs::kHeaderSize + kPath.size() + 1 + kToken.size() + 1);
    std::memcpy(h, m.data(), sizeof h);
    BOOST_TEST(h[0] == agent::xs::kWatch);
    BOOST_TEST(h[2] == 0u); // no transaction
    BOOST_TEST(h[3] == kPath.size() + 1 + kToken.size() + 1); // len counts both NULs
    BOOST_TEST(m.substr(agent::xs::kHeaderSize) == kPath + std::string(1, '\0') + kToken + std::string(1, '\0'));
    BOOST_CHECK_THROW(agent::watch_request("", kToken), std::invalid_argument);
    BOOST_CHECK_THROW(agent::watch_request(kPath, ""), std::invalid_argument);
    BOOST_CHECK_THROW(agent::watch_request(std::string("a\0b", 3), kToken), std::invalid_argument);
    BOOST_CHECK_THROW(agent::watch_request(std::string(4096, 'p'), kToken), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(the_reader_splits_messages_across_and_within_reads)
{
    const std::string two = event(kPath, kToken) + xs_ok(agent::xs::kWatch);
    agent::XsMessageReader r;
    std::vector<agent::XsMessage> got;
    for (char c : two) { // byte by byte: every split point
        r.feed(&c, 1);
        while (auto m = r.next())
            got.push_back(*m);
    }
    BOOST_REQUIRE_EQUAL(got.size(), 2u);
    BOOST_TEST(got[0].type == agent::xs::kWatchEvent);
    BOOST_TEST(agent::watch_event_token(got[0].body).value() == kToken);
    BOOST_TEST(got[1].type == agent::xs::kWatch);
    agent::XsMessageReader part; // what the watch's registration reads next
    BOOST_TEST(part.missing() == agent::xs::kHeaderSize);
    part.feed(two.data(), 5);
    BOOST_TEST(part.missing() == agent::xs::kHeaderSize - 5);
    part.feed(two.data() + 5, agent::xs::kHeaderSize - 5);
    BOOST_TEST(part.missing() == kPath.size() + 1 + kToken.size() + 1);
    agent::XsMessageReader whole;
    whole.feed(two.data(), two.size());
    BOOST_TEST(whole.next().has_value());
    BOOST_TEST(whole.next().has_value());
    BOOST_TEST(!whole.next().has_value());
    // A header claiming more than a xenstore payload can hold.
    agent::XsMessageReader bad;
    std::string big = xs_message(agent::xs::kWatchEvent, "");
    const std::uint32_t len = agent::xs::kPayloadMax + 1;
    std::memcpy(big.data() + 12, &len, 4);
    bad.feed(big.data(), big.size());
    BOOST_CHECK_THROW(bad.next(), std::runtime_error);
    // Event bodies without their two NULs.
    BOOST_TEST(!agent::watch_event_token("path-only").has_value());
    BOOST_TEST(!agent::watch_event_token(std::string("path\0token", 10)).has_value());
}

// Linux's device queues the watch's first firing from its xenwatch thread
// and the "OK" only after register_xenbus_watch returns, so the event can
// come first.  libxenstore's static archive (no reader thread) then failed
// xs_watch with EINVAL: the agent's old watch, in every Linux guest.
BOOST_AUTO_TEST_CASE(the_watch_survives_its_first_event_before_the_reply)
{
    for (bool byte_by_byte : {false, true}) {
        FakeXenbus dev;
        dev.serve(event(kPath, kToken) + xs_ok(agent::xs::kWatch), byte_by_byte);
        agent::XenbusWatch w(dev.agent_fd, kPath, kToken);
        dev.join();
        BOOST_TEST(dev.request == agent::watch_request(kPath, kToken));
        BOOST_TEST(w.drain() == 1u); // the early firing is kept, not lost
        BOOST_TEST(w.drain() == 0u);
        // Later firings, one for another token, split across writes.
        const std::string later = event(kPath, "other") + event(kPath, kToken) + event(kPath, kToken);
        BOOST_REQUIRE(::write(dev.dev_fd, later.data(), 7) == 7);
        BOOST_TEST(w.drain() == 0u);
        BOOST_REQUIRE(::write(dev.dev_fd, later.data() + 7, later.size() - 7) == ssize_t(later.size() - 7));
        BOOST_TEST(w.drain() == 2u);
    }
}

BOOST_AUTO_TEST_CASE(the_reply_in_the_usual_order_works_too)
{
    FakeXenbus dev;
    dev.serve(xs_ok(agent::xs::kWatch) + event(kPath, kToken));
    agent::XenbusWatch w(dev.agent_fd, kPath, kToken);
    dev.join();
    pollfd p{w.fd(), POLLIN, 0};
    BOOST_REQUIRE(::poll(&p, 1, 5000) == 1); // the fd is what the agent polls
    BOOST_TEST(w.drain() == 1u);
}

BOOST_AUTO_TEST_CASE(a_refused_missing_or_garbled_reply_is_a_clear_error)
{
    auto fails_with = [](std::string answer, const std::string& what, bool close_after = false) {
        FakeXenbus dev;
        dev.serve(answer, false, close_after);
        try {
            agent::XenbusWatch w(dev.agent_fd, kPath, kToken, std::chrono::milliseconds(200));
            BOOST_ERROR("no error; wanted " << what);
        } catch (const std::runtime_error& e) {
            BOOST_TEST_INFO(e.what());
            BOOST_TEST(std::string(e.what()).find(what) != std::string::npos);
            BOOST_TEST(std::string(e.what()).find(kPath) != std::string::npos);
        }
    };
    fails_with(xs_message(agent::xs::kError, std::string("EINVAL", 7)), "xenstore refused it: EINVAL");
    fails_with("", "no reply within 200 ms");
    fails_with("", "closed before its reply", true);
    fails_with(xs_message(2 /* XS_READ */, "x"), "unexpected xenstore message of type 2");
    fails_with(xs_message(agent::xs::kWatchEvent, "no-nul"), "malformed watch event");
}

BOOST_AUTO_TEST_CASE(a_device_that_goes_away_is_an_error_of_drain)
{
    FakeXenbus dev;
    dev.serve(xs_ok(agent::xs::kWatch));
    agent::XenbusWatch w(dev.agent_fd, kPath, kToken);
    dev.join();
    ::close(dev.dev_fd);
    dev.dev_fd = -1;
    BOOST_CHECK_THROW(w.drain(), std::runtime_error);
}

BOOST_AUTO_TEST_CASE(a_missing_device_names_itself)
{
    try {
        agent::XenbusWatch w("/nonexistent/xenbus", kPath, kToken);
        BOOST_ERROR("no error");
    } catch (const std::runtime_error& e) {
        BOOST_TEST(std::string(e.what()).find("cannot open /nonexistent/xenbus") != std::string::npos);
    }
}
