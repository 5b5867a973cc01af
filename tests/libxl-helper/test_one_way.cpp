// The engine's one-way and non-live streams (what the libxl-save-helper
// sends): bit-exact, nothing read past END, domains handed to the caller.
#define BOOST_TEST_MODULE one_way
#include <boost/test/unit_test.hpp>

#include "tests/unit/fake_domain.hpp"
#include "tests/unit/iovec_bytes.hpp"

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
    unsigned built_rounds = 0; // the result as built() saw it
    // on_handover: calls, and what the source looked like then.
    int handovers = 0, handed_over_then = -1;
    bool logging_then = true;
};

// via: the Domain the sender is given, when not src itself (a decorator);
// policy: the precopy policy, when not the default.
Result run(FakeDomain& src, FakeProvider& prov, bool live, bool one_way_sender = true, bool one_way_receiver = true,
           Domain* via = nullptr, const PolicyConfig* policy = nullptr)
{
    Pair p;
    Result r;
    SendOptions so;
    so.one_way = one_way_sender;
    so.live = live;
    if (policy)
        so.policy = *policy;
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
    ro.built = [&](IncomingDomain&, const ReceiveResult& res) {
        r.built = true;
        r.built_rounds = res.rounds;
    };
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
        r.sent = send_domain(via ? *via : src, p.a.get(), so);
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
    BOOST_TEST(r.built_rounds == r.received->rounds); // built() saw the final result
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

// Early state: asked after every precopy round, the last time before the
// suspension; at the destination each blob arrives with every page sent
// before it already written (each page as the source last read it), and
// before the platform state.
BOOST_AUTO_TEST_CASE(early_state_goes_before_the_suspension_after_every_earlier_page)
{
    FakeDomain src(3000, 8);
    src.early = true;
    src.hot_on_fetch = 40; // every round re-dirties pages: the last read differs from the first
    FakeProvider prov;
    PolicyConfig never_converges; // several precopy rounds: stops when the dirty set stalls
    never_converges.downtime_target_ms = 0;
    src.start_writer(2);
    auto r = run(src, prov, true, true, true, nullptr, &never_converges);
    src.stop_writer();
    BOOST_REQUIRE_MESSAGE(r.sent, r.send_error);
    BOOST_REQUIRE_MESSAGE(r.received, r.receive_error);
    BOOST_TEST((prov.last->mem == src.snapshot_));
    BOOST_TEST(r.sent->rounds >= 3u);
    const int precopy_rounds = int(r.sent->rounds) - 1;
    BOOST_TEST(src.early_calls_ == precopy_rounds);
    BOOST_TEST(src.suspends_at_early_ == 0); // the last one too
    BOOST_TEST(int(r.sent->early_state_blobs) == precopy_rounds);
    BOOST_TEST(prov.last->early_blobs == precopy_rounds);
    BOOST_TEST(!prov.last->early_after_restore);
    BOOST_TEST(prov.last->early_pages > 2000u);
    BOOST_TEST(prov.last->early_mismatches == 0u);
}

// The libxl helper wraps its backend's domain (LibxlSuspendedDomain); a
// ForwardingDomain passes every call on, early state included.
BOOST_AUTO_TEST_CASE(early_state_goes_through_a_forwarding_domain)
{
    FakeDomain src(2000, 11);
    src.early = true;
    src.start_writer(2);
    FakeProvider prov;
    ForwardingDomain wrapped(src);
    auto r = run(src, prov, true, true, true, &wrapped);
    src.stop_writer();
    BOOST_REQUIRE_MESSAGE(r.sent, r.send_error);
    BOOST_REQUIRE_MESSAGE(r.received, r.receive_error);
    BOOST_TEST((prov.last->mem == src.snapshot_));
    BOOST_TEST(src.early_calls_ >= 1);
    BOOST_TEST(prov.last->early_blobs == src.early_calls_);
    BOOST_TEST(prov.last->early_mismatches == 0u);
    BOOST_TEST(src.handed_over_ == 1);
}

BOOST_AUTO_TEST_CASE(no_early_state_without_precopy_or_an_offer)
{
    {
        FakeDomain src(1000, 9); // offers none
        FakeProvider prov;
        auto r = run_writing(src, prov, true);
        BOOST_TEST(r.sent->early_state_blobs == 0u);
        BOOST_TEST(prov.last->early_blobs == 0);
    }
    {
        FakeDomain src(1000, 10); // offers, but not live: suspended before any page
        src.early = true;
        FakeProvider prov;
        auto r = run_writing(src, prov, false);
        BOOST_TEST(src.early_calls_ == 0);
        BOOST_TEST(prov.last->early_blobs == 0);
    }
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

// EARLY_STATE is checked like any record from the network: announced in
// the header, only between rounds, never with several channels.
namespace {
std::string receive_made_up(std::uint64_t features, bool early_first, bool with_channels = false)
{
    wire::StreamHeader h;
    h.nr_pages = 64;
    h.features = features;
    h.domain_kind = kDomainKindSim;
    std::vector<std::uint8_t> s(wire::kSourceMagic.begin(), wire::kSourceMagic.end());
    auto add = [&](const std::vector<std::uint8_t>& r) { s.insert(s.end(), r.begin(), r.end()); };
    add(wire::encode_header(h));
    if (with_channels)
        add(wire::encode_channels({2, 42}));
    const std::vector<std::uint8_t> blob; // FakeIncoming: no checksums (type 9, empty)
    if (early_first)
        add(wire::encode_early_state(9, blob));
    wire::BatchEncoder enc;
    enc.begin(0);
    for (Pfn p = 0; p < 64; ++p)
        enc.add_zero(p);
    add(test::gather(enc.finish()));
    add(wire::encode_round_end({0, 64}));
    add(wire::encode_early_state(9, blob));
    add(wire::encode_end());
    Pair p;
    auto feeder = std::async(std::launch::async, [&] {
        (void)!::send(p.a.get(), s.data(), s.size(), MSG_NOSIGNAL);
    });
    FakeProvider prov;
    ReceiveOptions ro;
    ro.one_way = features & wire::kFeatureOneWay;
    ro.io_timeout = std::chrono::milliseconds(2000);
    ro.accept_channel = [](std::chrono::milliseconds) -> int { throw Error("no second connection here"); };
    std::string err;
    try {
        receive_domain(p.b.get(), prov, ro);
    } catch (const std::exception& e) {
        err = e.what();
    }
    feeder.get();
    return err;
}
} // namespace

BOOST_AUTO_TEST_CASE(early_state_records_are_checked)
{
    using namespace wire;
    // Accepted between rounds when announced (the sim destination ignores it;
    // the stream then fails only at its own checks: here it must succeed).
    auto ok = receive_made_up(kFeatureOneWay | kFeatureEarlyState, false);
    BOOST_TEST(ok.empty(), ok);
    auto e = receive_made_up(kFeatureOneWay, false);
    BOOST_TEST(e.find("early state, but the header did not announce it") != std::string::npos, e);
    e = receive_made_up(kFeatureOneWay | kFeatureEarlyState, true);
    BOOST_TEST(e.find("early state must follow a ROUND_END") != std::string::npos, e);
    e = receive_made_up(kFeatureEarlyState | kFeatureChannels, false, true);
    BOOST_TEST(e.find("early state on a stream of 2 channels") != std::string::npos, e);
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
