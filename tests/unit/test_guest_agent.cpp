// fastmig-guest-agent's page scan (guest-agent/free_pages.cpp) on synthetic
// /proc/kpageflags files, and the agent's answer to dom0 end to end over
// the process flavour of evtchn-ipc (the Xen flavour carries the same bytes).
#define BOOST_TEST_MODULE guest_agent
#include <boost/test/unit_test.hpp>

#include "evtchn-ipc/doorbell.hpp"
#include "evtchn-ipc/hint_session.hpp"
#include "evtchn-ipc/shared_region.hpp"
#include "guest-agent/free_pages.hpp"

#include <atomic>
#include <cstdlib>
#include <fcntl.h>
#include <random>
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
