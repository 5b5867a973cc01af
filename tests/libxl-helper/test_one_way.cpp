// The engine's one-way and non-live streams (what the libxl-save-helper
// sends): bit-exact, nothing read past END, domains handed to the caller.
#define BOOST_TEST_MODULE one_way
#include <boost/test/unit_test.hpp>

#include "tests/unit/fake_domain.hpp"

#include "stream/receiver.hpp"
#include "stream/sender.hpp"

#include <future>
#include <optional>

#include <unistd.h>

using namespace fastmig;
using namespace fastmig::test;

namespace {

const std::string kTrailer = "libxl records after the helper's part";

struct Result {
    std::optional<SendResult> sent;
    std::optional<ReceiveResult> received;
    std::string send_error, receive_error, after;
    bool accepted_before_pages = false, built = false;
};

Result run(FakeDomain& src, FakeProvider& prov, bool live, bool one_way_sender = true, bool one_way_receiver = true)
{
    Pair p;
    Result r;
    SendOptions so;
    so.one_way = one_way_sender;
    so.live = live;
    so.io_timeout = std::chrono::milliseconds(5000);
    so.done_timeout = std::chrono::milliseconds(2000);
    ReceiveOptions ro;
    ro.one_way = one_way_receiver;
    ro.io_timeout = std::chrono::milliseconds(5000);
    ro.commit_timeout = std::chrono::milliseconds(2000);
    ro.accepted = [&](IncomingDomain& d) {
        std::vector<std::uint8_t> page(kPageSize, 0xee);
        d.read_page(0, page);
        r.accepted_before_pages = page == std::vector<std::uint8_t>(kPageSize, 0);
    };
    ro.built = [&](IncomingDomain&) { r.built = true; };
    auto rx = std::async(std::launch::async, [&] {
        try {
            r.received = receive_domain(p.b.get(), prov, ro);
            // What the caller (libxl) reads next must still be there.
            std::string got(kTrailer.size(), '\0');
            std::size_t n = 0;
            while (n < got.size()) {
                ssize_t k = ::read(p.b.get(), got.data() + n, got.size() - n);
                if (k <= 0)
                    break;
                n += std::size_t(k);
            }
            r.after = got.substr(0, n);
        } catch (const std::exception& e) {
            r.receive_error = e.what();
        }
        p.b.reset();
    });
    try {
        r.sent = send_domain(src, p.a.get(), so);
        if (::write(p.a.get(), kTrailer.data(), kTrailer.size()) != ssize_t(kTrailer.size()))
            throw Error("trailer");
    } catch (const std::exception& e) {
        r.send_error = e.what();
    }
    p.a.reset();
    rx.get();
    return r;
}

// A guest writing its memory throughout, migrated one-way; both ends must succeed.
Result run_writing(FakeDomain& src, FakeProvider& prov, bool live)
{
    src.start_writer(2);
    auto r = run(src, prov, live);
    src.stop_writer();
    BOOST_REQUIRE_MESSAGE(r.sent, r.send_error);
    BOOST_REQUIRE_MESSAGE(r.received, r.receive_error);
    BOOST_TEST(r.after == kTrailer);
    BOOST_TEST((prov.last->mem == src.snapshot_));
    return r;
}

} // namespace

BOOST_AUTO_TEST_CASE(live_one_way_is_bit_exact_and_reads_nothing_past_end)
{
    FakeDomain src(3000, 3);
    FakeProvider prov;
    auto r = run_writing(src, prov, true);
    BOOST_TEST(r.accepted_before_pages);
    BOOST_TEST(r.built);
    // Both domains belong to the caller now: the source suspended once and
    // never resumed or released, the destination built, paused, not held.
    BOOST_TEST(src.suspends_ == 1);
    BOOST_TEST(src.resumes_ == 0);
    BOOST_TEST(!src.released_);
    BOOST_TEST((src.orphan_ == OrphanPolicy::none));
    BOOST_TEST(!prov.last->running);
    BOOST_TEST(!prov.last->destroyed);
    BOOST_TEST((prov.last->orphan == OrphanPolicy::none));
    BOOST_TEST(r.received->bytes_received == r.sent->bytes_sent);
}

BOOST_AUTO_TEST_CASE(not_live_suspends_first_and_sends_one_round)
{
    FakeDomain src(2000, 4);
    FakeProvider prov;
    auto r = run_writing(src, prov, false);
    BOOST_TEST(r.sent->rounds == 1u);
    BOOST_TEST(r.sent->pages_zero + r.sent->pages_data + r.sent->pages_free == 2000u);
}

BOOST_AUTO_TEST_CASE(one_way_and_two_way_ends_refuse_each_other)
{
    {
        FakeDomain src(500, 5);
        FakeProvider prov;
        auto r = run(src, prov, true, true, false);
        BOOST_TEST(r.receive_error.find("one-way stream") != std::string::npos, r.receive_error);
    }
    {
        FakeDomain src(500, 6);
        FakeProvider prov;
        auto r = run(src, prov, true, false, true);
        BOOST_TEST(r.receive_error.find("two-way stream") != std::string::npos, r.receive_error);
        BOOST_TEST(!r.sent); // it waited for an ACCEPT that never came
        BOOST_TEST(src.running());
    }
}
