// The engine end to end, in one process: sender and receiver on a socket
// pair, fake domains on both sides.  Proves bit-exactness while the guest
// writes, and that every failure leaves the domain running on exactly one side.
#define BOOST_TEST_MODULE engine
#include <boost/test/unit_test.hpp>

#include "fake_domain.hpp"
#include "iovec_bytes.hpp"
#include "migrate_pairs.hpp"
#include "stream/receiver.hpp"
#include "stream/sender.hpp"
#include "stream/transport.hpp"
#include "stream/wire.hpp"

#include <future>
#include <random>

#include <sys/socket.h>
#include <unistd.h>

using namespace fastmig;
using namespace fastmig::test;

namespace {

SendOptions quick_send()
{
    SendOptions o;
    o.io_timeout = std::chrono::milliseconds(5000);
    o.done_timeout = std::chrono::milliseconds(5000);
    o.verify = true;
    return o;
}

ReceiveOptions quick_receive()
{
    ReceiveOptions o;
    o.io_timeout = std::chrono::milliseconds(5000);
    return o;
}

Outcome migrate(FakeDomain& src, FakeProvider& prov, SendOptions so = quick_send(), ReceiveOptions ro = quick_receive())
{
    return migrate_over_pairs(src, prov, std::move(so), std::move(ro));
}

} // namespace

BOOST_AUTO_TEST_CASE(static_guest_is_bit_exact)
{
    FakeDomain src(2000, 1);
    FakeProvider prov;
    auto o = migrate(src, prov);
    BOOST_REQUIRE_MESSAGE(o.sent, o.send_error);
    BOOST_REQUIRE_MESSAGE(o.received, o.receive_error);
    BOOST_TEST(prov.last->mem == src.snapshot_);
    BOOST_TEST(prov.last->running);
    BOOST_TEST(*o.sent->verified);
    BOOST_TEST(src.released_);
    BOOST_TEST(o.sent->rounds >= 2u);
    BOOST_TEST((o.sent->stop_reason == StopReason::converged));
    BOOST_TEST(o.sent->pages_zero + o.sent->pages_data >= 2000u);
    // Platform state arrives as sent, opaque.
    BOOST_REQUIRE(prov.last->state.size() == 2u);
    BOOST_TEST(prov.last->state[0].type == 7u);
    BOOST_TEST((prov.last->state[0].data == std::vector<std::uint8_t>{1, 2, 3, 4, 5}));
    BOOST_TEST(prov.last->state[1].data.empty());
    BOOST_TEST(o.received->bytes_received == o.sent->bytes_sent);
}

BOOST_AUTO_TEST_CASE(writing_guest_is_bit_exact_across_seeds)
{
    for (std::uint64_t seed = 1; seed <= 12; ++seed) {
        FakeDomain src(1024 + seed * 97, seed);
        src.start_writer(static_cast<unsigned>(seed % 4 + 1));
        // Let the guest write before and during the migration.
        while (src.writes_ < 20)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        FakeProvider prov;
        SendOptions so = quick_send();
        so.pipeline.batch_pages = static_cast<std::uint32_t>(1 + seed * 37 % 1024);
        so.policy.downtime_target_ms = 0.5; // force several rounds
        so.policy.max_rounds = 6;
        auto o = migrate(src, prov, so);
        src.stop_writer();
        BOOST_REQUIRE_MESSAGE(o.sent, o.send_error);
        BOOST_TEST_CONTEXT("seed " << seed)
        {
            BOOST_TEST((prov.last->mem == src.snapshot_));
            BOOST_TEST(*o.sent->verified);
            BOOST_TEST(src.writes_ > 0u);
        }
    }
}

BOOST_AUTO_TEST_CASE(rewritten_zero_pages_are_cleared)
{
    // A page sent with data in round 0, zeroed by the guest, must arrive zero.
    struct Zeroing : FakeDomain {
        using FakeDomain::FakeDomain;
        std::uint64_t fetch_and_clear_dirty(DirtyBitmap& out) override
        {
            auto n = FakeDomain::fetch_and_clear_dirty(out);
            if (!zeroed) {
                zeroed = true;
                std::vector<std::uint8_t> z(kPageSize, 0);
                for (Pfn p = 0; p < nr_pages(); p += 3) {
                    std::vector<Pfn> one{p};
                    std::vector<std::uint8_t> page(kPageSize);
                    read_pages(one, page);
                    if (page != z) {
                        zero_list.push_back(p);
                        out.set(p);
                    }
                }
                n = out.count();
            }
            return n;
        }
        void read_pages(std::span<const Pfn> pfns, std::span<std::uint8_t> dst) override
        {
            FakeDomain::read_pages(pfns, dst);
            if (zeroed)
                for (std::size_t i = 0; i < pfns.size(); ++i)
                    if (std::find(zero_list.begin(), zero_list.end(), pfns[i]) != zero_list.end())
                        std::memset(dst.data() + i * kPageSize, 0, kPageSize);
        }
        bool zeroed = false;
        std::vector<Pfn> zero_list;
    } src(600, 5);
    FakeProvider prov;
    SendOptions so = quick_send();
    so.verify = false;
    auto o = migrate(src, prov, so);
    BOOST_REQUIRE_MESSAGE(o.sent, o.send_error);
    BOOST_REQUIRE(!src.zero_list.empty());
    for (Pfn p : src.zero_list)
        for (std::size_t i = 0; i < kPageSize; ++i)
            if (prov.last->mem[p * kPageSize + i] != 0)
                BOOST_FAIL("page " << p << " not zeroed");
    BOOST_TEST(o.received->pages_zeroed == src.zero_list.size());
}

// New memory at the destination may hold old data (Xen's populate_physmap
// hands out frames a running guest freed unscrubbed): every zero and free
// page must be cleared, once, through zero_fresh_pages as it arrives.
BOOST_AUTO_TEST_CASE(zero_and_free_pages_are_cleared_in_dirty_new_memory)
{
    FakeDomain src(3000, 17); // half the pages zero
    src.free_hint.resize(src.nr_pages());
    for (Pfn p = 1000; p < 1400; ++p)
        src.free_hint.set(p);
    FakeProvider prov({}, 0xa5);
    auto o = migrate(src, prov, quick_send());
    BOOST_REQUIRE_MESSAGE(o.sent, o.send_error + " / " + o.receive_error);
    BOOST_TEST(*o.sent->verified);
    std::uint64_t zero_pages = 0;
    for (Pfn p = 0; p < src.nr_pages(); ++p) {
        const std::uint8_t* d = prov.last->mem.data() + p * kPageSize;
        const bool is_free = p >= 1000 && p < 1400;
        const bool zero = std::all_of(d, d + kPageSize, [](std::uint8_t b) { return b == 0; });
        const bool same = std::memcmp(d, src.snapshot_.data() + p * kPageSize, kPageSize) == 0;
        if (is_free && !zero)
            BOOST_FAIL("free pfn " << p << " kept the new memory's old bytes");
        if (!is_free && !same)
            BOOST_FAIL("pfn " << p << " differs");
        // Cleared once if zero (new memory is 0xa5), never if it holds data.
        BOOST_TEST(prov.last->fresh_calls[p] == (zero ? 1u : 0u),
                   "pfn " << p << " cleared " << prov.last->fresh_calls[p] << " times");
        zero_pages += zero;
    }
    BOOST_TEST(zero_pages > 1000u);
}

BOOST_AUTO_TEST_CASE(a_source_that_shut_down_is_not_called_running)
{
    // What the Xen backend meets when the guest shuts down by itself as it
    // is asked to suspend (nested Xen: a triple fault at the suspend
    // request): suspend() fails and the domain is gone, not running.
    struct ShutsDown : FakeDomain {
        using FakeDomain::FakeDomain;
        void suspend(std::chrono::milliseconds) override
        {
            shut = true;
            throw Error("fake", Phase::stop_copy, "the domain is shut down (reason 1) instead of suspending");
        }
        bool running() const override { return !shut && FakeDomain::running(); }
        std::atomic<bool> shut{false};
    } src(600, 3);
    FakeProvider prov;
    auto o = migrate(src, prov);
    BOOST_TEST(!o.sent);
    BOOST_TEST(o.send_error.find("instead of suspending") != std::string::npos, o.send_error);
    BOOST_TEST(o.send_error.find("keeps running") == std::string::npos, o.send_error);
    BOOST_TEST(o.send_error.find("NOT running there") != std::string::npos, o.send_error);
}

BOOST_AUTO_TEST_CASE(refused_by_destination_keeps_source_running)
{
    FakeDomain src(4096, 2);
    FakeProvider prov;
    ReceiveOptions ro = quick_receive();
    ro.max_memory_bytes = 8 << 20; // 16 MiB guest > 8 MiB limit
    auto o = migrate(src, prov, quick_send(), ro);
    BOOST_TEST(!o.sent);
    BOOST_TEST(o.send_error.find("refused") != std::string::npos, o.send_error);
    BOOST_TEST(o.send_error.find("negotiate") != std::string::npos, o.send_error);
    BOOST_TEST(o.send_error.find("keeps running") != std::string::npos, o.send_error);
    BOOST_TEST(src.running());
    BOOST_TEST(src.suspends_ == 0);
    BOOST_TEST(!prov.last); // nothing was created
}

// A destination that cannot hold the guest (address space, memory) says so
// in ACCEPT, before any page and before building anything: the source hears
// a refusal in negotiate, with the cause on one line.
BOOST_AUTO_TEST_CASE(capacity_refusal_comes_before_any_page)
{
    FakeDomain src(4096, 2);
    FakeProvider prov(FailAt{.capacity = true});
    auto o = migrate(src, prov, quick_send(), quick_receive());
    BOOST_TEST(!o.sent);
    BOOST_TEST(prov.capacity_checks == 1);
    BOOST_TEST(o.send_error.find("negotiate: the destination refused the domain: cannot map the guest memory: Cannot allocate memory") !=
                   std::string::npos,
               o.send_error);
    BOOST_TEST(o.send_error.find("keeps running") != std::string::npos, o.send_error);
    BOOST_TEST(o.send_error.find('\n') == std::string::npos, o.send_error);
    BOOST_TEST(src.running());
    BOOST_TEST(src.suspends_ == 0);
    BOOST_TEST(!prov.last); // nothing was built
}

// The destination builds the domain while the source starts round 0 (after
// ACCEPT): a build failure reaches the source in DONE, with its cause.
BOOST_AUTO_TEST_CASE(create_failure_after_accept_reaches_the_source)
{
    FakeDomain src(100, 2);
    FakeProvider prov(FailAt{.create = true});
    auto o = migrate(src, prov);
    BOOST_TEST(!o.sent);
    BOOST_TEST(o.send_error.find("injected create failure") != std::string::npos, o.send_error);
    BOOST_TEST(o.send_error.find("keeps running") != std::string::npos, o.send_error);
    BOOST_TEST(src.running());
    BOOST_TEST(!src.released_);
}

// A domain being built when the migration fails (here: the extra channel
// never joins) is destroyed once built, never left behind.
BOOST_AUTO_TEST_CASE(domain_built_during_a_failed_join_is_destroyed)
{
    FakeDomain src(600, 4);
    FakeProvider prov;
    SendOptions so = quick_send();
    so.channels = 2;
    Pair spare; // the sender's second connection: nobody accepts it
    so.connect_channel = [&] { return ::dup(spare.a.get()); };
    ReceiveOptions ro = quick_receive();
    ro.accept_channel = [](std::chrono::milliseconds) -> int { throw Error("injected: no second connection"); };
    auto o = migrate(src, prov, so, ro);
    BOOST_TEST(!o.sent);
    BOOST_TEST(o.receive_error.find("no second connection") != std::string::npos, o.receive_error);
    BOOST_TEST(src.running());
    BOOST_REQUIRE(prov.last);
    BOOST_TEST(prov.last->destroyed);
    BOOST_TEST(!prov.last->running);
}

BOOST_AUTO_TEST_CASE(restore_failure_resumes_source_and_destroys_copy)
{
    for (FailAt f : {FailAt{.restore = true}, FailAt{.unpause = true}}) {
        FakeDomain src(300, 3);
        FakeProvider prov(f);
        auto o = migrate(src, prov);
        BOOST_TEST(!o.sent);
        BOOST_TEST(o.send_error.find("injected") != std::string::npos, o.send_error);
        BOOST_TEST(o.send_error.find("resumed on the source") != std::string::npos, o.send_error);
        BOOST_TEST(src.running());
        BOOST_TEST(src.resumes_ == 1);
        BOOST_TEST(!src.released_);
        BOOST_TEST(prov.last->destroyed);
        BOOST_TEST(!prov.last->running);
        BOOST_TEST(o.receive_error.find("injected") != std::string::npos, o.receive_error);
    }
}

BOOST_AUTO_TEST_CASE(peer_that_is_not_fastmig)
{
    // Source side: the "destination" answers like a web server.
    {
        FakeDomain src(100, 4);
        Pair p;
        auto peer = std::async(std::launch::async, [&] {
            const char reply[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
            (void)!::write(p.b.get(), reply, sizeof reply - 1);
            char buf[4096];
            while (::read(p.b.get(), buf, sizeof buf) > 0) {
            }
        });
        std::string err;
        try {
            send_domain(src, p.a.get(), quick_send());
        } catch (const std::exception& e) {
            err = e.what();
        }
        p.a.reset();
        peer.get();
        BOOST_TEST(err.find("not a fastmig receiver") != std::string::npos, err);
        BOOST_TEST(src.running());
    }
    // Destination side: the "source" sends text.
    {
        Pair p;
        const char junk[] = "GET / HTTP/1.0\r\n\r\n";
        (void)!::write(p.a.get(), junk, sizeof junk - 1);
        p.a.reset();
        FakeProvider prov;
        std::string err;
        try {
            receive_domain(p.b.get(), prov, quick_receive());
        } catch (const std::exception& e) {
            err = e.what();
        }
        BOOST_TEST(err.find("not a fastmig sender") != std::string::npos, err);
        BOOST_TEST(!prov.last);
    }
}

BOOST_AUTO_TEST_CASE(destination_vanishes_mid_stream)
{
    FakeDomain src(3000, 6);
    src.start_writer(2);
    FakeProvider prov;
    Pair p;
    // A destination that accepts, then dies after 100 KiB.
    auto rx = std::async(std::launch::async, [&] {
        std::vector<std::uint8_t> hdr(8 + 16 + 32 + 64);
        std::size_t got = 0;
        char buf[65536];
        // Read the magic + header record, answer ACCEPT, then drop.
        ssize_t n = ::read(p.b.get(), buf, sizeof buf);
        got += std::size_t(std::max<ssize_t>(n, 0));
        std::vector<std::uint8_t> out(wire::kReplyMagic.begin(), wire::kReplyMagic.end());
        auto acc = wire::encode_accept({wire::kAcceptOk, ""});
        out.insert(out.end(), acc.begin(), acc.end());
        (void)!::write(p.b.get(), out.data(), out.size());
        while (got < 100 * 1024 && (n = ::read(p.b.get(), buf, sizeof buf)) > 0)
            got += std::size_t(n);
        p.b.reset();
    });
    std::string err;
    try {
        send_domain(src, p.a.get(), quick_send());
    } catch (const std::exception& e) {
        err = e.what();
    }
    rx.get();
    src.stop_writer();
    BOOST_TEST(!err.empty());
    BOOST_TEST(err.find("fake:1: precopy") != std::string::npos, err);
    BOOST_TEST(src.running());
    BOOST_TEST(!src.released_);
}

BOOST_AUTO_TEST_CASE(truncated_stream_destroys_incoming_domain)
{
    // Record a real stream through a relay between a real sender and a real
    // receiver, then replay prefixes of it to fresh receivers.
    FakeDomain src(64, 9);
    Pair up, down; // sender <-> relay, relay <-> receiver
    std::vector<std::uint8_t> stream;
    auto relay = [](int from, int to, std::vector<std::uint8_t>* keep) {
        std::uint8_t buf[65536];
        ssize_t n;
        while ((n = ::read(from, buf, sizeof buf)) > 0) {
            if (keep)
                keep->insert(keep->end(), buf, buf + n);
            if (::send(to, buf, std::size_t(n), MSG_NOSIGNAL) != n)
                break;
        }
        ::shutdown(to, SHUT_WR);
    };
    auto fwd = std::async(std::launch::async, relay, up.b.get(), down.a.get(), &stream);
    auto back = std::async(std::launch::async, relay, down.a.get(), up.b.get(), nullptr);
    FakeProvider rprov;
    auto rx = std::async(std::launch::async, [&] { return receive_domain(down.b.get(), rprov, quick_receive()); });
    SendOptions so = quick_send();
    so.verify = false;
    send_domain(src, up.a.get(), so);
    rx.get();
    down.b.reset();
    up.a.reset();
    fwd.get();
    back.get();
    BOOST_REQUIRE(stream.size() > 64 * 1024);
    // Cut points: inside the header, at record boundaries and mid-page.
    std::vector<std::size_t> cuts = {0, 3, 8, 20, 60, 100, 5000, stream.size() / 2, stream.size() - 17, stream.size() - 1};
    for (std::size_t cut : cuts) {
        Pair q;
        // The prefix may not fit in the socket buffer: feed it from a thread.
        auto feeder = std::async(std::launch::async, [&] {
            std::size_t off = 0;
            while (off < cut) {
                ssize_t n = ::send(q.a.get(), stream.data() + off, cut - off, MSG_NOSIGNAL);
                if (n <= 0)
                    break;
                off += std::size_t(n);
            }
            ::shutdown(q.a.get(), SHUT_WR);
        });
        FakeProvider prov;
        std::string err;
        try {
            receive_domain(q.b.get(), prov, quick_receive());
        } catch (const std::exception& e) {
            err = e.what();
        }
        q.b.reset();
        feeder.get();
        BOOST_TEST_CONTEXT("cut at " << cut)
        {
            BOOST_TEST(!err.empty());
            if (prov.last) {
                BOOST_TEST(prov.last->destroyed);
                BOOST_TEST(!prov.last->running);
            }
        }
    }
}

// ---- the pipeline: channels, codecs, XBZRLE --------------------------------

namespace {

// N socket pairs; the receiver gets the extra ones through accept_channel.
// With `jitter`, every channel goes through a relay that forwards in random
// chunks with random pauses, so channels deliver in any relative order.
struct Links {
    std::vector<Pair> pairs;
    std::vector<Pair> relayed;
    std::vector<std::thread> relays;
    std::size_t next_accept = 1;

    // stall_channel: that channel's relay stops forwarding the sender's
    // bytes after stall_after of them (a connection that hangs, open).
    Links(unsigned n, bool jitter, unsigned seed, int stall_channel = -1, std::size_t stall_after = 0) : pairs(n)
    {
        if (!jitter)
            return;
        relayed.resize(n);
        for (unsigned c = 0; c < n; ++c) {
            // sender <-> pairs[c].a ... pairs[c].b <-> relay <-> relayed[c].a ... relayed[c].b <-> receiver
            int x = pairs[c].b.get(), y = relayed[c].a.get();
            std::size_t limit = int(c) == stall_channel ? stall_after : SIZE_MAX;
            relays.emplace_back([this, x, y, seed, c, limit] { pump(x, y, seed * 31 + c, true, limit, &stopping); });
            relays.emplace_back([this, x, y, seed, c] { pump(y, x, seed * 17 + c, false, SIZE_MAX, &stopping); });
        }
    }
    ~Links()
    {
        stopping = true;
        for (auto& p : pairs)
            ::shutdown(p.a.get(), SHUT_RDWR);
        for (auto& p : relayed)
            ::shutdown(p.b.get(), SHUT_RDWR);
        for (auto& t : relays)
            t.join();
    }
    std::atomic<bool> stopping{false};
    static void pump(int from, int to, unsigned seed, bool delay, std::size_t limit, const std::atomic<bool>* stop)
    {
        std::mt19937 rng(seed);
        std::vector<std::uint8_t> buf(256 * 1024);
        std::size_t forwarded = 0;
        for (;;) {
            if (forwarded >= limit) { // hang, open, until the test ends
                while (!*stop)
                    std::this_thread::sleep_for(std::chrono::milliseconds(5));
                break;
            }
            std::size_t want = std::min<std::size_t>(1 + rng() % buf.size(), limit - forwarded);
            ssize_t n = ::read(from, buf.data(), want);
            if (n <= 0)
                break;
            if (delay && rng() % 4 == 0)
                std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
            if (::send(to, buf.data(), std::size_t(n), MSG_NOSIGNAL) != n)
                break;
            forwarded += std::size_t(n);
        }
        ::shutdown(to, SHUT_WR);
    }
    int receiver_fd(unsigned c) { return relayed.empty() ? pairs[c].b.get() : relayed[c].b.get(); }
};

struct PipelineOutcome {
    std::optional<SendResult> sent;
    std::string send_error, receive_error;
    std::optional<ReceiveResult> received;
};

PipelineOutcome migrate_links(FakeDomain& src, FakeProvider& prov, Links& links, const SendOptions& so)
{
    PipelineOutcome out;
    ReceiveOptions ro = quick_receive();
    ro.accept_channel = [&](std::chrono::milliseconds) { return ::dup(links.receiver_fd(links.next_accept++)); };
    auto rx = std::async(std::launch::async, [&] {
        try {
            out.received = receive_domain(links.receiver_fd(0), prov, ro);
        } catch (const std::exception& e) {
            out.receive_error = e.what();
        }
    });
    SendOptions o = so;
    o.channels = static_cast<unsigned>(links.pairs.size());
    std::size_t next = 1;
    o.connect_channel = [&] { return ::dup(links.pairs[next++].a.get()); };
    try {
        out.sent = send_domain(src, links.pairs[0].a.get(), o);
    } catch (const std::exception& e) {
        out.send_error = e.what();
    }
    rx.get();
    return out;
}

} // namespace

BOOST_AUTO_TEST_CASE(channels_codecs_xbzrle_out_of_order_are_bit_exact)
{
    unsigned seed = 0;
    for (unsigned channels : {1u, 2u, 3u, 8u})
        for (auto alg : {codec::Algorithm::none, codec::Algorithm::igzip, codec::Algorithm::zlib})
            for (std::size_t cache : {std::size_t(0), std::size_t(1) << 20}) {
                ++seed;
                FakeDomain src(6000, seed, true);
                src.start_writer(4, 16); // random writes while pages are read
                src.fetch_delay_ms = 2;
                src.hot_on_fetch = 24;   // and a hot set re-dirtied every round
                while (src.writes_ < 20)
                    std::this_thread::sleep_for(std::chrono::milliseconds(1));
                FakeProvider prov;
                SendOptions so = quick_send();
                so.pipeline.threads = 1 + seed % 3;
                so.pipeline.batch_pages = 64 + seed * 37 % 400;
                so.pipeline.compression.algorithm = alg;
                // Every group compressed: this checks the wire, not the
                // policy (which starts raw and may not turn compression on
                // before a guest this small is encoded).
                so.pipeline.compression.always = alg != codec::Algorithm::none;
                so.pipeline.xbzrle_cache_bytes = cache;
                so.policy.downtime_target_ms = 0.5; // several rounds: XBZRLE needs re-dirtied pages
                so.policy.max_rounds = 8;
                Links links(channels, /*jitter=*/true, seed);
                auto o = migrate_links(src, prov, links, so);
                src.stop_writer();
                BOOST_TEST_CONTEXT("channels " << channels << " codec " << codec::algorithm_name(alg) << " xbzrle "
                                               << cache)
                {
                    BOOST_REQUIRE_MESSAGE(o.sent, o.send_error + " / " + o.receive_error);
                    BOOST_TEST((prov.last->mem == src.snapshot_));
                    BOOST_TEST(*o.sent->verified);
                    BOOST_TEST(o.sent->channels == channels);
                    BOOST_TEST(o.received->channels == channels);
                    if (alg != codec::Algorithm::none)
                        BOOST_TEST(o.sent->pages_deflate > 0u);
                    else
                        BOOST_TEST(o.sent->pages_deflate == 0u);
                    if (cache)
                        BOOST_TEST(o.sent->pages_xbzrle > 0u, "hits " << o.sent->xbzrle_hits << " misses " << o.sent->xbzrle_misses << " rounds " << o.sent->rounds);
                    else
                        BOOST_TEST(o.sent->pages_xbzrle == 0u);
                    BOOST_TEST(o.received->pages_deflate == o.sent->pages_deflate);
                    BOOST_TEST(o.received->pages_xbzrle == o.sent->pages_xbzrle);
                }
            }
}

BOOST_AUTO_TEST_CASE(a_stalled_channel_is_named_by_the_source)
{
    // Channel 1 hangs after 64 KiB: the source's writer for it stops making
    // progress and says which channel and round; the other channel carries on.
    FakeDomain src(6000, 91);
    FakeProvider prov;
    SendOptions so = quick_send();
    so.io_timeout = std::chrono::milliseconds(1500); // the receiver's is 5000: the source gives up first
    Links links(2, /*jitter=*/true, 91, /*stall_channel=*/1, /*stall_after=*/64 * 1024);
    auto o = migrate_links(src, prov, links, so);
    BOOST_REQUIRE(!o.sent);
    BOOST_TEST(o.send_error.find("channel 1 (writing round 0): peer stopped reading for 1500 ms") != std::string::npos,
               o.send_error);
    BOOST_TEST(o.send_error.find("the domain keeps running on the source") != std::string::npos, o.send_error);
    BOOST_TEST(!o.receive_error.empty());
}

BOOST_AUTO_TEST_CASE(selective_compression_sends_random_regions_raw)
{
    // Text regions compress, random ones do not: both encodings in one run.
    FakeDomain src(8192, 77, true);
    FakeProvider prov;
    SendOptions so = quick_send();
    so.pipeline.compression.algorithm = codec::Algorithm::igzip;
    so.pipeline.max_bandwidth = 100e6; // a slow link: compressing pays
    // Small batches: the workers encode at most a few hundred pages ahead
    // of the writers, so the verdict taken once the link is measured (after
    // 4 MiB) reaches most of this small guest.
    so.pipeline.batch_pages = 64;
    Links links(2, false, 1);
    auto o = migrate_links(src, prov, links, so);
    BOOST_REQUIRE_MESSAGE(o.sent, o.send_error + " / " + o.receive_error);
    BOOST_TEST((prov.last->mem == src.snapshot_));
    BOOST_TEST(o.sent->pages_deflate > 1000u, (o.sent->round_stats.front().compression
                                                     ? o.sent->round_stats.front().compression->why()
                                                     : std::string("no verdict")));
    BOOST_TEST(o.sent->pages_data - o.sent->pages_deflate > 1000u); // random pages went raw
    // The random regions were probed, found incompressible and skipped: far
    // fewer bytes went through the compressor than there are data pages.
    BOOST_TEST(o.sent->deflate_in < o.sent->pages_data * kPageSize * 3 / 4);
}

BOOST_AUTO_TEST_CASE(bandwidth_cap_is_respected)
{
    FakeDomain src(4096, 5); // ~8 MiB of random data
    FakeProvider prov;
    SendOptions so = quick_send();
    so.pipeline.compression.algorithm = codec::Algorithm::none;
    so.pipeline.max_bandwidth = 40e6; // 40 MB/s: ~0.2 s for the data
    Links links(2, false, 2);
    Stopwatch sw;
    auto o = migrate_links(src, prov, links, so);
    double s = sw.seconds();
    BOOST_REQUIRE_MESSAGE(o.sent, o.send_error + " / " + o.receive_error);
    double rate = double(o.sent->bytes_sent) / s;
    BOOST_TEST(rate < 40e6 * 1.15, "achieved " << rate << " B/s");
    BOOST_TEST((prov.last->mem == src.snapshot_));
}

BOOST_AUTO_TEST_CASE(pfn_on_wrong_channel_is_refused)
{
    // A hand-made two-channel stream that puts pfn 0 (channel 0) on channel 1.
    Links links(2, false, 3);
    FakeProvider prov;
    ReceiveOptions ro = quick_receive();
    ro.accept_channel = [&](std::chrono::milliseconds) { return ::dup(links.pairs[1].b.get()); };
    auto feeder = std::async(std::launch::async, [&] {
        wire::StreamHeader h;
        h.nr_pages = 1024;
        h.features = wire::kFeatureChannels;
        h.domain_kind = kDomainKindSim;
        std::vector<std::uint8_t> s0(wire::kSourceMagic.begin(), wire::kSourceMagic.end());
        auto add = [](std::vector<std::uint8_t>& v, const std::vector<std::uint8_t>& r) { v.insert(v.end(), r.begin(), r.end()); };
        add(s0, wire::encode_header(h));
        add(s0, wire::encode_channels({2, 42}));
        std::vector<std::uint8_t> s1(wire::kSourceMagic.begin(), wire::kSourceMagic.end());
        add(s1, wire::encode_channel_hello({1, 42}));
        wire::BatchEncoder enc;
        enc.begin(0);
        enc.add_zero(0);
        add(s1, test::gather(enc.finish()));
        (void)!::send(links.pairs[0].a.get(), s0.data(), s0.size(), MSG_NOSIGNAL);
        (void)!::send(links.pairs[1].a.get(), s1.data(), s1.size(), MSG_NOSIGNAL);
    });
    std::string err;
    try {
        receive_domain(links.pairs[0].b.get(), prov, ro);
    } catch (const std::exception& e) {
        err = e.what();
    }
    feeder.get();
    BOOST_TEST(err.find("belongs to channel 0") != std::string::npos, err);
    BOOST_REQUIRE(prov.last);
    BOOST_TEST(prov.last->destroyed);
}

BOOST_AUTO_TEST_CASE(free_page_hints_skip_free_pages_and_catch_reuse)
{
    // Half the guest is "free": garbage the guest does not care about.  Those
    // pages go as FREE without being read; one the guest takes back during
    // precopy arrives with its data.
    FakeDomain src(4096, 21);
    src.free_hint.resize(src.nr_pages());
    for (Pfn p = 0; p < src.nr_pages(); p += 2)
        src.free_hint.set(p);
    // The guest takes pfn 100 back right after round 0.
    FakeProvider prov;
    SendOptions so = quick_send();
    so.policy.downtime_target_ms = 0.5;
    so.policy.max_rounds = 3;
    std::atomic<bool> reused{false};
    so.log = [&](const std::string& line) {
        if (!reused && line.rfind("round 0", 0) == 0) {
            src.reuse_free_page(100);
            reused = true;
        }
    };
    Links links(2, false, 4);
    auto o = migrate_links(src, prov, links, so);
    BOOST_REQUIRE_MESSAGE(o.sent, o.send_error + " / " + o.receive_error);
    BOOST_TEST(reused.load());
    BOOST_TEST(o.sent->pages_free == 2048u);
    BOOST_TEST(src.reads_of_free == 0u); // pfn 100 was no longer hinted when read again
    BOOST_TEST(*o.sent->verified);
    for (Pfn p = 0; p < src.nr_pages(); ++p) {
        const std::uint8_t* d = prov.last->mem.data() + p * kPageSize;
        const std::uint8_t* s0 = src.snapshot_.data() + p * kPageSize;
        bool free_now = p % 2 == 0 && p != 100;
        if (free_now) {
            if (std::any_of(d, d + kPageSize, [](std::uint8_t b) { return b != 0; }))
                BOOST_FAIL("free pfn " << p << " is not zero at the destination");
        } else if (std::memcmp(d, s0, kPageSize) != 0) {
            BOOST_FAIL("pfn " << p << " differs");
        }
    }
    BOOST_TEST(prov.last->mem[100 * kPageSize] == 0x5a);
}

// Consecutive free pages (and zero pages) go as runs: a descriptor per run
// of up to one channel region, not one per page, and the destination still
// gets every page right.
BOOST_AUTO_TEST_CASE(free_and_zero_pages_go_as_runs)
{
    FakeDomain src(4096, 31);
    src.free_hint.resize(src.nr_pages());
    for (Pfn p = 700; p < 2900; ++p) // crosses four channel regions
        src.free_hint.set(p);
    FakeProvider prov;
    Links links(2, false, 5);
    auto o = migrate_links(src, prov, links, quick_send());
    BOOST_REQUIRE_MESSAGE(o.sent, o.send_error + " / " + o.receive_error);
    BOOST_TEST(*o.sent->verified);
    BOOST_TEST(o.sent->pages_free == 2200u);
    // One descriptor per page would cost 2200 * 8 bytes for the free pages
    // alone; as runs they cost a few descriptors.  Everything else is
    // bounded by: data, one descriptor per other page, and 8 KiB of record
    // headers and control.
    const std::uint64_t bound = o.sent->pages_data * kPageSize + (4096 - 2200) * 8 + 8192;
    BOOST_TEST(o.sent->bytes_sent < bound, o.sent->bytes_sent << " >= " << bound);
    for (Pfn p = 0; p < src.nr_pages(); ++p) {
        const std::uint8_t* d = prov.last->mem.data() + p * kPageSize;
        if (p >= 700 && p < 2900) {
            if (std::any_of(d, d + kPageSize, [](std::uint8_t b) { return b != 0; }))
                BOOST_FAIL("free pfn " << p << " is not zero at the destination");
        } else if (std::memcmp(d, src.snapshot_.data() + p * kPageSize, kPageSize) != 0) {
            BOOST_FAIL("pfn " << p << " differs");
        }
    }
}
