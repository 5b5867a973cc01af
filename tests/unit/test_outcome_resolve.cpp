// Resolving a lost COMMIT (docs/stream-format.md): a relay between a real
// sender and a real receiver loses COMMIT, loses DONE, or holds COMMIT back
// until the source's outcome query has been answered (the race), and the
// source asks on a new connection.  In every case exactly one copy runs,
// and the source is in doubt only when nobody answers.
#define BOOST_TEST_MODULE outcome_resolve
#include <boost/test/unit_test.hpp>

#include "fake_domain.hpp"
#include "stream/auth/auth.hpp"
#include "stream/outcome_store.hpp"
#include "temp_dir.hpp"
#include "stream/reconnect.hpp"
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

enum class Fault {
    none,
    lose_commit, // COMMIT never reaches the destination, both connections drop
    lose_done,   // DONE never reaches the source, both connections drop
    hold_commit, // the source's connection drops; COMMIT reaches the destination after the query was answered
};

class Relay {
public:
    Relay(int to_sender, int to_receiver, Fault f, std::atomic<bool>& answered)
        : s_(to_sender), r_(to_receiver), f_(f), answered_(answered)
    {
        fwd_ = std::thread([this] { pump(s_, r_, wire::kSourceMagic, true); });
        back_ = std::thread([this] { pump(r_, s_, wire::kReplyMagic, false); });
    }
    ~Relay()
    {
        fwd_.join();
        back_.join();
    }

private:
    void pump(int from, int to, const std::array<std::uint8_t, 8>& magic, bool forward)
    {
        try {
            SocketSource src(from, std::chrono::milliseconds(10000));
            wire::read_magic(src, magic);
            write_all(to, std::span<const std::uint8_t>(magic.data(), magic.size()), std::chrono::seconds(5));
            wire::RecordReader rd(src);
            for (;;) {
                auto rec = rd.read();
                if (forward && rec.type == wire::RecordType::commit && f_ == Fault::lose_commit) {
                    ::shutdown(s_, SHUT_RDWR);
                    ::shutdown(r_, SHUT_RDWR);
                    return;
                }
                if (!forward && rec.type == wire::RecordType::done && f_ == Fault::lose_done) {
                    ::shutdown(s_, SHUT_RDWR);
                    ::shutdown(r_, SHUT_RDWR);
                    return;
                }
                if (forward && rec.type == wire::RecordType::commit && f_ == Fault::hold_commit) {
                    // The source loses its connection; the destination's
                    // stays up and gets COMMIT once the query is answered.
                    ::shutdown(s_, SHUT_RDWR);
                    for (int i = 0; i < 1000 && !answered_; ++i)
                        std::this_thread::sleep_for(std::chrono::milliseconds(5));
                }
                auto bytes = wire::encode_record(rec.type, rec.body);
                write_all(to, bytes, std::chrono::seconds(5));
            }
        } catch (const std::exception&) {
            ::shutdown(to, SHUT_WR);
        }
    }
    int s_, r_;
    Fault f_;
    std::atomic<bool>& answered_;
    std::thread fwd_, back_;
};

struct Run {
    std::optional<SendResult> sent;
    std::string send_error;
    bool in_doubt = false;
    std::optional<ReceiveResult> received;
    std::string receive_error;
    std::vector<wire::OutcomeAnswer> answers;
};

bool contains(const std::string& s, const std::string& w) { return s.find(w) != std::string::npos; }

// One migration through the relay; the source's outcome queries go to a
// second receiver sharing the store (a `fastmig receive` taking the next
// connection), unless `reachable` is false.
Run migrate(FakeDomain& src, FakeProvider& prov, OutcomeStore& store, Fault f, bool reachable = true,
            std::vector<std::uint8_t> psk = {})
{
    Pair sp, rp;
    Run out;
    std::atomic<bool> answered{false};
    std::vector<std::thread> servers;
    FakeProvider unused;
    ReceiveOptions ro;
    ro.io_timeout = std::chrono::milliseconds(3000);
    ro.commit_timeout = std::chrono::milliseconds(3000);
    ro.done_ack_timeout = std::chrono::milliseconds(1000);
    ro.outcomes = &store;
    ro.psk = psk;
    ReceiveOptions rq = ro;
    SendOptions so;
    so.io_timeout = std::chrono::milliseconds(3000);
    so.done_timeout = std::chrono::milliseconds(3000);
    so.verify = true;
    so.psk = psk;
    so.resolve.destination = "the test's receiver";
    so.resolve.deadline = std::chrono::milliseconds(8000);
    so.resolve.retry_interval = std::chrono::milliseconds(20);
    so.resolve.max_attempts = 5;
    so.resolve.attempt_timeout = std::chrono::milliseconds(3000);
    std::mutex lock;
    so.resolve.connect = [&](std::chrono::milliseconds) -> int {
        if (!reachable)
            throw Error("connect: Network is unreachable");
        auto p = std::make_shared<Pair>();
        std::lock_guard<std::mutex> l(lock);
        servers.emplace_back([&, p] {
            try {
                auto r = receive_domain(p->b.get(), unused, rq);
                std::lock_guard<std::mutex> l2(lock);
                out.answers.push_back(r.query_answer);
            } catch (const std::exception&) {
            }
            answered = true;
        });
        return ::dup(p->a.get());
    };
    {
        Relay relay(sp.b.get(), rp.a.get(), f, answered);
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
    }
    for (auto& t : servers)
        t.join();
    return out;
}

void expect_source_only(const Run& r, FakeDomain& src, FakeProvider& prov)
{
    BOOST_TEST(!r.in_doubt, r.send_error);
    BOOST_TEST(src.running());
    BOOST_TEST(!src.released_);
    BOOST_TEST(prov.last->destroyed);
    BOOST_TEST(!prov.last->running);
}

void expect_destination_only(const Run& r, FakeDomain& src, FakeProvider& prov)
{
    BOOST_TEST(!r.in_doubt, r.send_error);
    BOOST_TEST(r.send_error.empty(), r.send_error);
    BOOST_TEST(!src.running());
    BOOST_TEST(src.released_);
    BOOST_TEST(prov.last->running);
    BOOST_TEST(!prov.last->destroyed);
}

} // namespace

BOOST_AUTO_TEST_CASE(no_fault_done_ack_and_a_started_record)
{
    TempDir d;
    OutcomeStore store(d.path, std::chrono::seconds(3600));
    FakeDomain src(600, 1);
    FakeProvider prov;
    auto r = migrate(src, prov, store, Fault::none);
    expect_destination_only(r, src, prov);
    BOOST_REQUIRE(r.sent);
    BOOST_TEST(r.sent->resolved.empty());
    BOOST_TEST(r.sent->verified.value_or(false));
    BOOST_TEST(r.answers.empty()); // nobody asked
}

BOOST_AUTO_TEST_CASE(commit_lost_query_says_not_committed_source_resumes)
{
    TempDir d;
    OutcomeStore store(d.path, std::chrono::seconds(3600));
    FakeDomain src(600, 2);
    src.start_writer(1);
    FakeProvider prov;
    auto r = migrate(src, prov, store, Fault::lose_commit);
    src.stop_writer();
    expect_source_only(r, src, prov);
    BOOST_TEST(contains(r.send_error, "confirmed the domain never ran there"), r.send_error);
    BOOST_TEST(contains(r.send_error, "resumed on the source"), r.send_error);
    BOOST_REQUIRE(!r.answers.empty());
    BOOST_TEST((r.answers.back() == wire::OutcomeAnswer::not_committed));
}

BOOST_AUTO_TEST_CASE(done_lost_query_says_committed_source_released_and_verified)
{
    TempDir d;
    OutcomeStore store(d.path, std::chrono::seconds(3600));
    FakeDomain src(600, 3);
    FakeProvider prov;
    auto r = migrate(src, prov, store, Fault::lose_done);
    expect_destination_only(r, src, prov);
    BOOST_REQUIRE(r.sent);
    BOOST_TEST(r.sent->resolved == "committed");
    // The digest DONE would have carried comes with the answer.
    BOOST_TEST(r.sent->verified.value_or(false));
    BOOST_TEST(r.receive_error.empty(), r.receive_error);
}

BOOST_AUTO_TEST_CASE(commit_after_the_query_is_refused_never_two_running)
{
    // The race: the source gave up on its connection and asked; the
    // destination's connection was still up and COMMIT arrives after the
    // answer.  The query won: the late COMMIT must not start the copy.
    TempDir d;
    OutcomeStore store(d.path, std::chrono::seconds(3600));
    FakeDomain src(600, 4);
    FakeProvider prov;
    auto r = migrate(src, prov, store, Fault::hold_commit);
    expect_source_only(r, src, prov);
    BOOST_TEST(contains(r.receive_error, "outcome query had given the migration up"), r.receive_error);
    BOOST_REQUIRE(!r.answers.empty());
    BOOST_TEST((r.answers.back() == wire::OutcomeAnswer::not_committed));
}

BOOST_AUTO_TEST_CASE(unreachable_destination_stays_in_doubt_with_the_admins_checklist)
{
    TempDir d;
    OutcomeStore store(d.path, std::chrono::seconds(3600));
    FakeDomain src(600, 5);
    FakeProvider prov;
    auto r = migrate(src, prov, store, Fault::lose_commit, false);
    BOOST_TEST(r.in_doubt);
    BOOST_TEST(contains(r.send_error, "DONE never came"), r.send_error);
    BOOST_TEST(contains(r.send_error, "5 attempts"), r.send_error);
    BOOST_TEST(contains(r.send_error, "PAUSED"), r.send_error);
    BOOST_TEST(contains(r.send_error, ".outcome"), r.send_error);
    BOOST_TEST(!src.running());
    BOOST_TEST(!src.released_);
    BOOST_TEST(!prov.last->running);
}

BOOST_AUTO_TEST_CASE(the_query_is_authenticated_with_the_key)
{
    // A destination with a key answers only a source that proves it holds
    // the same key; a wrong key gets no answer (and cannot give one).
    TempDir d;
    OutcomeStore store(d.path, std::chrono::seconds(3600));
    wire::MigrationId id{};
    id[3] = 7;
    store.announce(id, "fake:2");
    BOOST_TEST(store.decide_commit(id));
    store.mark_started(id, 42);
    auto key = auth::parse_key_hex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", "test");
    auto other = auth::parse_key_hex("ff112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", "test");
    FakeProvider unused;
    ReceiveOptions rq;
    rq.io_timeout = std::chrono::milliseconds(2000);
    rq.outcomes = &store;
    rq.psk = key;
    std::vector<std::thread> servers;
    ResolveOptions o;
    o.destination = "test";
    o.max_attempts = 1;
    o.attempt_timeout = std::chrono::milliseconds(2000);
    o.connect = [&](std::chrono::milliseconds) -> int {
        auto p = std::make_shared<Pair>();
        servers.emplace_back([&, p] {
            try {
                receive_domain(p->b.get(), unused, rq);
            } catch (const std::exception&) {
            }
        });
        return ::dup(p->a.get());
    };
    auto good = resolve_outcome(id, key, o, {});
    auto bad = resolve_outcome(id, other, o, {});
    auto none = resolve_outcome(id, {}, o, {});
    for (auto& t : servers)
        t.join();
    BOOST_TEST((good.kind == Resolution::committed), good.detail);
    BOOST_TEST(good.verify_digest == 42u);
    BOOST_TEST((bad.kind == Resolution::unresolved));
    BOOST_TEST(contains(bad.detail, "different key"), bad.detail);
    BOOST_TEST((none.kind == Resolution::unresolved));
    BOOST_TEST(contains(none.detail, "requires authentication"), none.detail);
    // Neither failed attempt changed the record.
    BOOST_TEST((store.lookup(id).entry.state == OutcomeState::started));
}

BOOST_AUTO_TEST_CASE(a_receiver_without_records_refuses_the_feature)
{
    FakeDomain src(300, 7);
    FakeProvider prov;
    Pair p;
    ReceiveOptions ro; // no store
    SendOptions so;
    so.resolve.connect = [](std::chrono::milliseconds) -> int { throw Error("unused"); };
    std::string rerr;
    auto rx = std::async(std::launch::async, [&] {
        try {
            receive_domain(p.b.get(), prov, ro);
        } catch (const std::exception& e) {
            rerr = e.what();
        }
    });
    std::string serr;
    try {
        send_domain(src, p.a.get(), so);
    } catch (const std::exception& e) {
        serr = e.what();
    }
    rx.get();
    BOOST_TEST(contains(serr, "keeps no outcome records"), serr);
    BOOST_TEST(src.running());
}
