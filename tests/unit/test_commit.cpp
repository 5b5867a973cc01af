// The end of the protocol: READY, COMMIT, DONE.  A relay between a real
// sender and a real receiver cuts the connection at each step; every outcome
// must leave the domain running on exactly one side, except the one case the
// protocol declares in doubt (COMMIT sent, DONE lost), where the source stays
// paused and says so.
#define BOOST_TEST_MODULE commit
#include <boost/test/unit_test.hpp>

#include "fake_domain.hpp"
#include "stream/receiver.hpp"
#include "stream/sender.hpp"
#include "stream/transport.hpp"
#include "stream/wire.hpp"

#include <atomic>
#include <future>
#include <optional>
#include <thread>

#include <sys/socket.h>
#include <unistd.h>

using namespace fastmig;
using namespace fastmig::test;

namespace {

// Forwards records both ways between the sender's socket and the receiver's,
// and cuts both connections (without forwarding it) at the first record of
// type `cut` travelling in the chosen direction.
class Relay {
public:
    Relay(int to_sender, int to_receiver, bool cut_reply_direction, wire::RecordType cut)
        : s_(to_sender), r_(to_receiver)
    {
        fwd_ = std::thread([=, this] { pump(s_, r_, wire::kSourceMagic, !cut_reply_direction, cut); });
        back_ = std::thread([=, this] { pump(r_, s_, wire::kReplyMagic, cut_reply_direction, cut); });
    }
    ~Relay()
    {
        fwd_.join();
        back_.join();
    }
    std::atomic<bool> cut_done{false};

private:
    void pump(int from, int to, const std::array<std::uint8_t, 8>& magic, bool may_cut, wire::RecordType cut)
    {
        try {
            SocketSource src(from, std::chrono::milliseconds(10000));
            wire::read_magic(src, magic);
            write_all(to, std::span<const std::uint8_t>(magic.data(), magic.size()), std::chrono::seconds(5));
            wire::RecordReader rd(src);
            for (;;) {
                auto rec = rd.read();
                if (may_cut && rec.type == cut) {
                    cut_done = true;
                    ::shutdown(s_, SHUT_RDWR);
                    ::shutdown(r_, SHUT_RDWR);
                    return;
                }
                auto bytes = wire::encode_record(rec.type, rec.body);
                write_all(to, bytes, std::chrono::seconds(5));
            }
        } catch (const std::exception&) {
            // Either side closed: pass the hang-up on.
            ::shutdown(to, SHUT_WR);
        }
    }
    int s_, r_;
    std::thread fwd_, back_;
};

struct Run {
    std::optional<SendResult> sent;
    std::string send_error;
    bool in_doubt = false;
    std::optional<ReceiveResult> received;
    std::string receive_error;
    bool cut = false;
};

Run migrate_through_relay(FakeDomain& src, FakeProvider& prov, bool reply_direction, wire::RecordType cut,
                          ReceiveOptions ro = {})
{
    Pair sp, rp; // sender <-> relay, relay <-> receiver
    Run out;
    SendOptions so;
    so.io_timeout = std::chrono::milliseconds(3000);
    so.done_timeout = std::chrono::milliseconds(3000);
    so.verify = true;
    ro.io_timeout = std::chrono::milliseconds(3000);
    {
        Relay relay(sp.b.get(), rp.a.get(), reply_direction, cut);
        auto rx = std::async(std::launch::async, [&] {
            try {
                out.received = receive_domain(rp.b.get(), prov, ro);
            } catch (const std::exception& e) {
                out.receive_error = e.what();
            }
            ::shutdown(rp.b.get(), SHUT_RDWR);
        });
        try {
            out.sent = send_domain(src, sp.a.get(), so);
        } catch (const InDoubtError& e) {
            out.in_doubt = true;
            out.send_error = e.what();
        } catch (const std::exception& e) {
            out.send_error = e.what();
        }
        ::shutdown(sp.a.get(), SHUT_RDWR);
        rx.get();
        out.cut = relay.cut_done;
    }
    return out;
}

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// The two outcomes a fault may end in, besides success.
void expect_runs_at_source_only(FakeDomain& src, FakeProvider& prov)
{
    BOOST_TEST(src.running());
    BOOST_TEST(!src.released_);
    BOOST_TEST(prov.last->destroyed);
    BOOST_TEST(!prov.last->running);
}

void expect_source_paused_in_doubt(const Run& r, FakeDomain& src)
{
    BOOST_TEST(r.cut);
    BOOST_TEST(r.in_doubt);
    BOOST_TEST(contains(r.send_error, "commit"), r.send_error);
    BOOST_TEST(contains(r.send_error, "PAUSED"), r.send_error);
    BOOST_TEST(!src.running());
    BOOST_TEST(!src.released_);
    BOOST_TEST((src.orphan_ == OrphanPolicy::keep_paused));
}

} // namespace

BOOST_AUTO_TEST_CASE(relay_without_cut_migrates)
{
    FakeDomain src(600, 1);
    src.start_writer(1);
    FakeProvider prov;
    // A type that never travels in the reply direction: nothing is cut.
    auto r = migrate_through_relay(src, prov, true, wire::RecordType::header);
    src.stop_writer();
    BOOST_TEST(r.send_error.empty(), r.send_error);
    BOOST_TEST(r.receive_error.empty(), r.receive_error);
    BOOST_REQUIRE(r.sent);
    BOOST_TEST(r.sent->verified.value_or(false));
    BOOST_TEST(src.released_);
    BOOST_TEST(prov.last->running);
    BOOST_TEST(!prov.last->destroyed);
    BOOST_TEST((prov.last->orphan == OrphanPolicy::none));
}

BOOST_AUTO_TEST_CASE(ready_lost_source_resumes_destination_destroys)
{
    FakeDomain src(600, 2);
    src.start_writer(1);
    FakeProvider prov;
    auto r = migrate_through_relay(src, prov, true, wire::RecordType::ready);
    src.stop_writer();
    BOOST_TEST(r.cut);
    BOOST_TEST(!r.in_doubt);
    BOOST_TEST(contains(r.send_error, "finish"), r.send_error);
    BOOST_TEST(contains(r.send_error, "resumed on the source"), r.send_error);
    expect_runs_at_source_only(src, prov);
}

BOOST_AUTO_TEST_CASE(commit_lost_is_in_doubt_and_nothing_runs_twice)
{
    FakeDomain src(600, 3);
    src.start_writer(1);
    FakeProvider prov;
    auto r = migrate_through_relay(src, prov, false, wire::RecordType::commit);
    src.stop_writer();
    // The source cannot know whether COMMIT arrived: it stays paused.
    expect_source_paused_in_doubt(r, src);
    // The destination never got it: it must not run its copy.
    BOOST_TEST(contains(r.receive_error, "commit"), r.receive_error);
    BOOST_TEST(prov.last->destroyed);
    BOOST_TEST(!prov.last->running);
}

BOOST_AUTO_TEST_CASE(done_lost_destination_runs_source_stays_paused)
{
    FakeDomain src(600, 4);
    src.start_writer(1);
    FakeProvider prov;
    auto r = migrate_through_relay(src, prov, true, wire::RecordType::done);
    src.stop_writer();
    expect_source_paused_in_doubt(r, src);
    // Running at the destination, exactly once.
    BOOST_TEST(r.receive_error.empty(), r.receive_error);
    BOOST_TEST(prov.last->running);
    BOOST_TEST(!prov.last->destroyed);
    BOOST_TEST(r.received.has_value());
}

BOOST_AUTO_TEST_CASE(unpause_failure_after_commit_resumes_source)
{
    FakeDomain src(600, 5);
    FakeProvider prov(FailAt{false, false, true});
    auto r = migrate_through_relay(src, prov, true, wire::RecordType::header);
    // DONE with an error status after COMMIT is definite: the copy is gone.
    BOOST_TEST(!r.in_doubt);
    BOOST_TEST(contains(r.send_error, "could not start the domain after COMMIT"), r.send_error);
    expect_runs_at_source_only(src, prov);
}

BOOST_AUTO_TEST_CASE(silent_source_after_ready_times_out_and_destroys)
{
    FakeProvider prov;
    FakeDomain src(300, 6);
    // COMMIT is swallowed and the connection stays open: the receiver's
    // commit_timeout must fire (not an EOF).
    ReceiveOptions ro;
    ro.io_timeout = std::chrono::milliseconds(3000);
    ro.commit_timeout = std::chrono::milliseconds(300);
    Pair sp, rp;
    std::atomic<bool> stop{false};
    std::thread fwd([&] {
        // Source to destination: forward everything up to COMMIT, then hold.
        try {
            SocketSource in(sp.b.get(), std::chrono::milliseconds(5000));
            wire::read_magic(in, wire::kSourceMagic);
            write_all(rp.a.get(), std::span<const std::uint8_t>(wire::kSourceMagic.data(), 8), std::chrono::seconds(5));
            wire::RecordReader rd(in);
            for (;;) {
                auto rec = rd.read();
                if (rec.type == wire::RecordType::commit)
                    break;
                write_all(rp.a.get(), wire::encode_record(rec.type, rec.body), std::chrono::seconds(5));
            }
        } catch (const std::exception&) {
        }
        while (!stop)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
    });
    std::thread back([&] {
        char buf[65536];
        ssize_t n;
        try {
            while ((n = ::read(rp.a.get(), buf, sizeof buf)) > 0)
                write_all(sp.b.get(), std::span<const std::uint8_t>(reinterpret_cast<std::uint8_t*>(buf), std::size_t(n)),
                          std::chrono::seconds(5));
        } catch (const std::exception&) {
        }
        ::shutdown(sp.b.get(), SHUT_WR);
    });
    std::string rerr, serr;
    bool in_doubt = false;
    auto rx = std::async(std::launch::async, [&] {
        try {
            receive_domain(rp.b.get(), prov, ro);
        } catch (const std::exception& e) {
            rerr = e.what();
        }
        ::shutdown(rp.b.get(), SHUT_RDWR);
    });
    SendOptions so;
    so.io_timeout = std::chrono::milliseconds(3000);
    so.done_timeout = std::chrono::milliseconds(3000);
    try {
        send_domain(src, sp.a.get(), so);
    } catch (const InDoubtError& e) {
        in_doubt = true;
        serr = e.what();
    } catch (const std::exception& e) {
        serr = e.what();
    }
    rx.get();
    stop = true;
    ::shutdown(sp.a.get(), SHUT_RDWR);
    ::shutdown(rp.a.get(), SHUT_RDWR);
    fwd.join();
    back.join();
    BOOST_TEST(contains(rerr, "commit"), rerr);
    BOOST_TEST(contains(rerr, "destroyed"), rerr);
    BOOST_TEST(prov.last->destroyed);
    BOOST_TEST(!prov.last->running);
    // The source did send COMMIT, but the destination's answer (DONE with
    // an error: copy destroyed) still reached it, so resuming is safe.
    BOOST_TEST(!in_doubt, serr);
    BOOST_TEST(contains(serr, "resumed on the source"), serr);
    BOOST_TEST(src.running());
}
