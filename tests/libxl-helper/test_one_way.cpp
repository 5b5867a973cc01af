// The engine's one-way and non-live streams (what the libxl-save-helper
// sends): bit-exact, nothing read past END, domains handed to the caller.
#define BOOST_TEST_MODULE one_way
#include <boost/test/unit_test.hpp>

#include "tests/unit/fake_domain.hpp"

#include "stream/receiver.hpp"
#include "stream/sender.hpp"
#include "stream/transport.hpp"

#include <future>
#include <optional>
#include <thread>

#include <cstdlib>

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
    // on_handover: calls, and what the source looked like then.
    int handovers = 0, handed_over_then = -1;
    bool logging_then = true;
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
    so.on_handover = [&](const SendResult&) {
        ++r.handovers;
        r.handed_over_then = src.handed_over_;
        r.logging_then = src.logging();
    };
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
    // Handed over once, END out: the domain's own state undone first
    // (log-dirty off), then the caller told (before the sender's teardown).
    BOOST_TEST(r.handovers == 1);
    BOOST_TEST(r.handed_over_then == 1);
    BOOST_TEST(!r.logging_then);
    BOOST_TEST(src.handed_over_ == 1);
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

// A one-way source has no ROUND_ACK: after each round it waits for its own
// pipe or socket to empty instead (Sender::wait_round_acks).
BOOST_AUTO_TEST_CASE(unread_bytes_of_pipes_sockets_and_files)
{
    int p[2];
    BOOST_REQUIRE(::pipe(p) == 0);
    Fd r(p[0]), w(p[1]);
    std::vector<std::uint8_t> buf(10000, 0x5a);
    BOOST_REQUIRE(::write(w.get(), buf.data(), buf.size()) == ssize_t(buf.size()));
    BOOST_TEST(unread_bytes(w.get()) == 10000u);
    BOOST_TEST(unread_bytes(r.get()) == 10000u);
    BOOST_TEST(!wait_drained(w.get(), 8192, std::chrono::milliseconds(20)));
    BOOST_REQUIRE(::read(r.get(), buf.data(), 4000) == 4000);
    BOOST_TEST(unread_bytes(w.get()) == 6000u);
    BOOST_TEST(wait_drained(w.get(), 8192, std::chrono::milliseconds(20)));
    // Drained by a reader while waiting.
    std::thread reader([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        [[maybe_unused]] auto n = ::read(r.get(), buf.data(), buf.size());
    });
    BOOST_TEST(wait_drained(w.get(), 0, std::chrono::seconds(10)));
    reader.join();

    Pair s;
    BOOST_REQUIRE(::write(s.a.get(), buf.data(), 5000) == 5000);
    BOOST_TEST(unread_bytes(s.a.get()) >= 5000u); // a socket's queue counts its buffers' overhead too
    BOOST_REQUIRE(::read(s.b.get(), buf.data(), buf.size()) == 5000);
    BOOST_TEST(unread_bytes(s.a.get()) == 0u);

    char path[] = "/tmp/fastmig-unread-XXXXXX";
    Fd f(::mkstemp(path));
    BOOST_REQUIRE(f.get() >= 0);
    ::unlink(path);
    BOOST_REQUIRE(::write(f.get(), buf.data(), 5000) == 5000);
    BOOST_TEST(unread_bytes(f.get()) == 0u);
}

// A blocking socket whose peer stopped reading: write_all gives up after its
// timeout with a clear error instead of blocking in send() for ever.
BOOST_AUTO_TEST_CASE(write_all_times_out_when_the_peer_stops_reading)
{
    Pair s; // blocking, as tcp_connect and accept leave connections
    std::vector<std::uint8_t> big(16 << 20, 0x42);
    auto w = std::async(std::launch::async, [&]() -> std::string {
        try {
            write_all(s.a.get(), std::span<const std::uint8_t>(big), std::chrono::milliseconds(200));
            return "16 MiB went into a socket nobody reads";
        } catch (const Error& e) {
            return e.what();
        }
    });
    if (w.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
        BOOST_ERROR("write_all still blocked after 30 s with a 200 ms timeout");
        ::shutdown(s.b.get(), SHUT_RDWR); // unblock it, to end the test
    }
    const std::string what = w.get();
    BOOST_TEST(what.find("peer stopped reading for 200 ms") != std::string::npos, what);
}
