// The PV destination's background clearing of zero and free pages
// (stream/domain/xen/zero_page_clearer.hpp), with a fake for Xen: "the
// domain's memory" is a small array per pfn, dirty at first (a frame a
// live domain freed), and the clearing zeroes it in two halves with a pause
// between, so a read that races with it would see a half-cleared frame.
// The fake can be slowed down, made to fail, and records every call.
#define BOOST_TEST_MODULE zero_page_clearer
#include <boost/test/unit_test.hpp>

#include "stream/domain/xen/zero_page_clearer.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <numeric>
#include <optional>
#include <thread>

using namespace fastmig;
using namespace fastmig::xen;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kBytes = 64; // of each fake page

std::vector<Pfn> range(Pfn first, Pfn n)
{
    std::vector<Pfn> v(n);
    std::iota(v.begin(), v.end(), first);
    return v;
}

// Only touched under the clearer's lock (by the clearing) or by the test
// thread on pages it owns (written, or settled): TSan checks that claim.
struct FakeMemory {
    explicit FakeMemory(std::size_t n) : pages(n)
    {
        for (auto& p : pages)
            p.fill(0xAA);
    }
    std::vector<std::array<std::uint8_t, kBytes>> pages;
    std::vector<std::size_t> cleared = std::vector<std::size_t>(pages.size(), 0); // times each pfn was cleared
    std::vector<std::size_t> chunks;                                              // sizes, in order
    std::atomic<std::size_t> calls{0};
    std::atomic<bool> busy{false};
    std::atomic<std::chrono::microseconds> pause{0us}; // changed while the thread runs
    std::optional<Pfn> fail_at; // populating this pfn fails (out of memory)

    ZeroPageClearer::ClearFn fn()
    {
        return [this](std::span<const Pfn> ps) {
            busy = true;
            ++calls;
            chunks.push_back(ps.size());
            for (Pfn p : ps)
                if (fail_at && p == *fail_at) {
                    busy = false;
                    throw Error("xen:7", Phase::receive, "cannot populate 1 pages from pfn " + std::to_string(p));
                }
            for (Pfn p : ps)
                std::fill_n(pages[p].begin(), kBytes / 2, 0);
            std::this_thread::sleep_for(pause.load());
            for (Pfn p : ps) {
                std::fill_n(pages[p].begin() + kBytes / 2, kBytes / 2, 0);
                ++cleared[p];
            }
            busy = false;
        };
    }
    void write(Pfn p, std::uint8_t v) { pages[p].fill(v); }
    bool zero(Pfn p) const
    {
        return std::all_of(pages[p].begin(), pages[p].end(), [](std::uint8_t b) { return b == 0; });
    }
};

// f throws an Error whose message holds needle.
bool throws(const std::function<void()>& f, const std::string& needle)
{
    try {
        f();
    } catch (const Error& e) {
        BOOST_TEST_MESSAGE("thrown: " << e.what());
        return std::string(e.what()).find(needle) != std::string::npos;
    }
    return false;
}
#define CHECK_ERROR(expr, needle) BOOST_TEST(throws([&] { expr; }, needle))

void wait_for(const std::atomic<bool>& flag)
{
    for (int i = 0; i < 10000 && !flag; ++i)
        std::this_thread::sleep_for(100us);
    BOOST_REQUIRE(flag);
}

// A clearer of n pages, all added, its thread in its first chunk of 1024
// (each chunk takes `pause`).
struct Busy {
    Busy(std::size_t n, std::chrono::microseconds pause) : mem(n), c(n, mem.fn(), 1024)
    {
        mem.pause = pause;
        c.add(range(0, n));
        wait_for(mem.busy);
    }
    FakeMemory mem;
    ZeroPageClearer c;
};

} // namespace

BOOST_AUTO_TEST_CASE(every_page_cleared_once_in_chunks)
{
    FakeMemory mem(5000);
    ZeroPageClearer c(5000, mem.fn(), 1024);
    auto all = range(0, 5000);
    c.add(std::span<const Pfn>(all).subspan(0, 2500));
    c.add(std::span<const Pfn>(all).subspan(2500));
    auto d = c.drain();
    BOOST_TEST(d.background + d.at_end == 5000u);
    BOOST_TEST(c.pending() == 0u);
    for (Pfn p = 0; p < 5000; ++p) {
        BOOST_TEST_REQUIRE(mem.cleared[p] == 1u);
        BOOST_TEST_REQUIRE(mem.zero(p));
    }
    BOOST_TEST(*std::max_element(mem.chunks.begin(), mem.chunks.end()) <= 1024u);
    CHECK_ERROR(c.add(std::vector<Pfn>{1}), "after the clearer was drained");
}

BOOST_AUTO_TEST_CASE(a_pfn_beyond_the_guest_is_refused)
{
    FakeMemory mem(16);
    ZeroPageClearer c(16, mem.fn());
    CHECK_ERROR(c.add(std::vector<Pfn>{3, 16}), "beyond the guest's 16 pages");
    BOOST_TEST(c.pending() == 0u); // nothing of the refused call
    auto d = c.drain();
    BOOST_TEST(d.background + d.at_end == 0u);
    BOOST_TEST(mem.calls == 0u);
}

BOOST_AUTO_TEST_CASE(a_page_written_during_a_clear_is_never_wiped)
{
    Busy b(4096, 50ms);  // the first chunk, [0, 1024), is being cleared
    auto& [mem, c] = b;
    // One page of the chunk in progress (waits for it), one of a later chunk.
    const std::vector<Pfn> w = {500, 3000};
    c.written(w);
    BOOST_TEST(mem.cleared[500] == 1u); // the clear came first, never after
    for (Pfn p : w)
        mem.write(p, 0x55);
    mem.pause = 0ms;
    auto d = c.drain();
    BOOST_TEST(d.background + d.at_end == 4095u); // 3000 never
    BOOST_TEST(mem.cleared[3000] == 0u);
    for (Pfn p : w)
        BOOST_TEST(mem.pages[p][0] == 0x55);
}

BOOST_AUTO_TEST_CASE(a_page_read_during_a_clear_reads_as_zeros)
{
    Busy b(4096, 30ms);
    auto& [mem, c] = b;
    // 100 is in the chunk in progress (half cleared now), 2000 and 4000 in
    // later ones (dirty now).
    const std::vector<Pfn> r = {100, 2000, 4000, 2000};
    c.settle(r);
    for (Pfn p : r) {
        BOOST_TEST(mem.zero(p));
        BOOST_TEST(mem.cleared[p] == 1u);
    }
    mem.pause = 0ms;
    auto d = c.drain();
    BOOST_TEST(d.background + d.at_end == 4096u - 2); // 2000 and 4000 went with the read
    for (Pfn p = 0; p < 4096; ++p)
        BOOST_TEST_REQUIRE(mem.cleared[p] == 1u);
}

BOOST_AUTO_TEST_CASE(drain_waits_for_the_chunk_in_progress_and_clears_the_rest)
{
    Busy b(8192, 20ms);
    auto& [mem, c] = b;
    auto d = c.drain();
    BOOST_TEST(!mem.busy);
    BOOST_TEST(d.background >= 1024u); // the chunk it was in
    BOOST_TEST(d.at_end > 0u);         // 8 chunks of 20 ms do not fit before drain
    BOOST_TEST(d.background + d.at_end == 8192u);
    BOOST_TEST(d.ns > 0u);
    BOOST_TEST(c.pending() == 0u);
    for (Pfn p = 0; p < 8192; ++p)
        BOOST_TEST_REQUIRE(mem.zero(p));
}

BOOST_AUTO_TEST_CASE(the_clearers_error_is_thrown_by_the_next_call)
{
    FakeMemory mem(4096);
    mem.fail_at = 2100;
    ZeroPageClearer c(4096, mem.fn(), 1024);
    c.add(range(0, 4096));
    // The thread fails at the chunk [2048, 3072): the next call throws.
    bool thrown = false;
    for (int i = 0; i < 10000 && !thrown; ++i) {
        try {
            c.written(std::vector<Pfn>{0});
            std::this_thread::sleep_for(100us);
        } catch (const Error& e) {
            thrown = true;
            BOOST_TEST(e.what() == std::string("xen:7: receive: cannot populate 1 pages from pfn 2100"));
        }
    }
    BOOST_REQUIRE(thrown);
    const std::size_t calls = mem.calls;
    std::this_thread::sleep_for(20ms);
    BOOST_TEST(mem.calls == calls); // it clears nothing more
    BOOST_CHECK_THROW(c.add(std::vector<Pfn>{1}), Error);
    BOOST_CHECK_THROW(c.settle(std::vector<Pfn>{4000}), Error);
    CHECK_ERROR(c.drain(), "from pfn 2100");
}

BOOST_AUTO_TEST_CASE(an_error_while_settling_is_the_readers)
{
    FakeMemory mem(64);
    mem.fail_at = 9;
    mem.pause = 0ms;
    ZeroPageClearer c(64, mem.fn(), 4);
    c.written(std::vector<Pfn>{}); // nothing pending: no thread, no call
    BOOST_TEST(mem.calls == 0u);
    c.add(std::vector<Pfn>{9});
    CHECK_ERROR(c.settle(std::vector<Pfn>{9}), "from pfn 9");
}

BOOST_AUTO_TEST_CASE(destruction_while_busy_joins)
{
    FakeMemory mem(8192);
    mem.pause = 30ms;
    {
        ZeroPageClearer c(8192, mem.fn(), 1024);
        c.add(range(0, 8192));
        wait_for(mem.busy);
    } // joined after its chunk, the rest left
    BOOST_TEST(!mem.busy);
    BOOST_TEST(mem.calls < 8u);
    {
        ZeroPageClearer idle(16, mem.fn()); // never started
    }
}

BOOST_AUTO_TEST_CASE(stop_leaves_the_rest_pending_and_drain_clears_it)
{
    Busy b(4096, 20ms);
    auto& [mem, c] = b;
    c.stop();
    BOOST_TEST(!mem.busy);
    const auto left = c.pending();
    BOOST_TEST(left >= 1024u);
    BOOST_TEST(left <= 3072u);
    std::this_thread::sleep_for(40ms);
    BOOST_TEST(c.pending() == left); // no thread clears any more
    mem.pause = 0ms;
    auto d = c.drain();
    BOOST_TEST(d.at_end == left);
    BOOST_TEST(d.background + d.at_end == 4096u);
}

// The pure pending set as the clearer uses it (resolve_next, settle).
BOOST_AUTO_TEST_CASE(pending_set_resolves_lowest_first)
{
    WaitingZeroPages w(100);
    w.add(std::vector<Pfn>{50, 10, 90, 11, 50});
    BOOST_TEST(w.count() == 4u);
    std::vector<Pfn> got;
    auto take = [&](std::span<const Pfn> ps) { got.assign(ps.begin(), ps.end()); };
    BOOST_TEST(w.resolve_next(2, take) == 2u);
    BOOST_TEST((got == std::vector<Pfn>{10, 11}));
    w.add(std::vector<Pfn>{5}); // below the cursor: found again
    BOOST_TEST(w.resolve_next(2, take) == 2u);
    BOOST_TEST((got == std::vector<Pfn>{5, 50}));
    BOOST_TEST(w.settle(std::vector<Pfn>{90, 90, 3}, take) == 1u);
    BOOST_TEST((got == std::vector<Pfn>{90}));
    BOOST_TEST(w.count() == 0u);
    BOOST_TEST(w.resolve_next(2, take) == 0u);
    // A failed population leaves its pages waiting.
    w.add(std::vector<Pfn>{20, 21});
    BOOST_CHECK_THROW(w.resolve_next(8, [](std::span<const Pfn>) { throw Error("no memory"); }), Error);
    BOOST_TEST(w.count() == 2u);
    BOOST_TEST(w.resolve_next(8, take) == 2u);
    BOOST_TEST((got == std::vector<Pfn>{20, 21}));
}
