// The destination's outcome records (stream/outcome_store.hpp): the one
// decision out of `pending` is taken once whoever races for it, and every
// way a record file can be damaged (torn, truncated, CRC, another id, an
// unreadable or missing directory, expired) is answered `unknown`, never
// with a guess.  Also the OUTCOME records' parsers.
#define BOOST_TEST_MODULE outcome_store
#include <boost/test/unit_test.hpp>

#include "stream/outcome_store.hpp"
#include "temp_dir.hpp"
#include "stream/transport.hpp"
#include "stream/wire_outcome.hpp"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace fastmig;
using fastmig::test::TempDir;

namespace {

wire::MigrationId id_of(std::uint8_t n)
{
    wire::MigrationId id{};
    id[0] = n;
    id[15] = 0xa5;
    return id;
}

std::vector<std::uint8_t> file_bytes(const std::string& path)
{
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
}

void put_file(const std::string& path, const std::vector<std::uint8_t>& b)
{
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

void age_file(const std::string& path, long seconds)
{
    timeval tv[2];
    ::gettimeofday(&tv[0], nullptr);
    tv[0].tv_sec -= seconds;
    tv[1] = tv[0];
    ::utimes(path.c_str(), tv);
}

bool contains(const std::string& s, const std::string& w) { return s.find(w) != std::string::npos; }

// A store in a fresh directory holding one `pending` record.
struct Announced {
    TempDir d;
    OutcomeStore s{d.path, std::chrono::seconds(3600)};
    wire::MigrationId id;
    std::string path;
    Announced(std::uint8_t n, const std::string& domain) : id(id_of(n)), path(s.path_of(id)) { s.announce(id, domain); }
};

// A damaged record is "do not know": UNKNOWN to a query, refused by both
// decisions, and never overwritten by them.
void check_corrupt_is_unknown(OutcomeStore& s, const wire::MigrationId& id, const std::string& what)
{
    const auto before = file_bytes(s.path_of(id));
    BOOST_TEST((s.lookup(id).kind == OutcomeLookup::corrupt), what);
    BOOST_TEST((answer_outcome_query(&s, id).answer == wire::OutcomeAnswer::unknown), what);
    BOOST_CHECK_THROW(s.decide_commit(id), Error);
    BOOST_CHECK_THROW(s.decide_destroyed_by_owner(id), Error);
    BOOST_TEST(file_bytes(s.path_of(id)) == before, what);
}

} // namespace

BOOST_AUTO_TEST_CASE(success_path_committed_then_started)
{
    TempDir d;
    OutcomeStore s(d.path, std::chrono::seconds(3600));
    auto id = id_of(1);
    s.announce(id, "sim:7");
    BOOST_TEST((s.lookup(id).entry.state == OutcomeState::pending));
    BOOST_TEST(s.decide_commit(id));
    s.mark_started(id, 0x1234);
    auto l = s.lookup(id);
    BOOST_TEST((l.kind == OutcomeLookup::found));
    BOOST_TEST((l.entry.state == OutcomeState::started));
    BOOST_TEST(l.entry.domain == "sim:7");
    auto a = answer_outcome_query(&s, id);
    BOOST_TEST((a.answer == wire::OutcomeAnswer::committed));
    BOOST_TEST(a.verify_digest == 0x1234u);
    // A started record is never turned into destroyed by the owner.
    BOOST_CHECK_THROW(s.decide_destroyed_by_owner(id), Error);
}

BOOST_AUTO_TEST_CASE(a_query_before_commit_wins_and_commit_is_refused)
{
    TempDir d;
    OutcomeStore s(d.path, std::chrono::seconds(3600));
    auto id = id_of(2);
    s.announce(id, "sim:8");
    auto a = answer_outcome_query(&s, id);
    BOOST_TEST((a.answer == wire::OutcomeAnswer::not_committed));
    BOOST_TEST(!s.decide_commit(id)); // the late COMMIT must not start the domain
    BOOST_TEST((s.lookup(id).entry.state == OutcomeState::destroyed));
}

BOOST_AUTO_TEST_CASE(commit_without_start_is_unknown_not_a_guess)
{
    // The receiver died between its decision and the start: the copy may
    // or may not have started, so neither side may act on its own.
    TempDir d;
    OutcomeStore s(d.path, std::chrono::seconds(3600));
    auto id = id_of(3);
    s.announce(id, "sim:9");
    BOOST_TEST(s.decide_commit(id));
    auto a = answer_outcome_query(&s, id);
    BOOST_TEST((a.answer == wire::OutcomeAnswer::unknown));
    BOOST_TEST(contains(a.message, "sim:9"), a.message);
    // The owner may still give it up if the start failed.
    BOOST_TEST((s.decide_destroyed_by_owner(id) == OutcomeState::destroyed));
    BOOST_TEST((answer_outcome_query(&s, id).answer == wire::OutcomeAnswer::not_committed));
}

BOOST_AUTO_TEST_CASE(an_id_is_announced_once)
{
    TempDir d;
    OutcomeStore s(d.path, std::chrono::seconds(3600));
    s.announce(id_of(4), "sim:1");
    BOOST_CHECK_THROW(s.announce(id_of(4), "sim:1"), Error);
}

BOOST_AUTO_TEST_CASE(missing_record_and_no_store_are_unknown)
{
    TempDir d;
    OutcomeStore s(d.path, std::chrono::seconds(3600));
    BOOST_TEST((answer_outcome_query(&s, id_of(5)).answer == wire::OutcomeAnswer::unknown));
    BOOST_TEST((answer_outcome_query(nullptr, id_of(5)).answer == wire::OutcomeAnswer::unknown));
    BOOST_CHECK_THROW(s.decide_commit(id_of(5)), Error);
    // A failure before announce leaves nothing to record.
    BOOST_TEST((s.decide_destroyed_by_owner(id_of(5)) == OutcomeState::destroyed));
    BOOST_TEST((s.lookup(id_of(5)).kind == OutcomeLookup::missing));
}

BOOST_AUTO_TEST_CASE(torn_and_truncated_files_are_corrupt)
{
    Announced a(6, "sim:2");
    const auto good = file_bytes(a.path);
    for (std::size_t keep : {std::size_t(0), std::size_t(7), std::size_t(30), good.size() - 1}) {
        put_file(a.path, {good.begin(), good.begin() + std::ptrdiff_t(keep)});
        check_corrupt_is_unknown(a.s, a.id, "kept " + std::to_string(keep));
    }
    auto longer = good;
    longer.push_back(0);
    put_file(a.path, longer);
    BOOST_TEST((a.s.lookup(a.id).kind == OutcomeLookup::corrupt));
}

BOOST_AUTO_TEST_CASE(a_flipped_bit_fails_the_crc)
{
    TempDir d;
    OutcomeStore s(d.path, std::chrono::seconds(3600));
    auto id = id_of(7);
    s.announce(id, "sim:3");
    BOOST_TEST(s.decide_commit(id));
    s.mark_started(id, 1);
    const std::string p = s.path_of(id);
    const auto good = file_bytes(p);
    for (std::size_t i = 0; i < good.size(); i += 3) {
        auto bad = good;
        bad[i] ^= 0x10;
        put_file(p, bad);
        auto l = s.lookup(id);
        BOOST_TEST((l.kind == OutcomeLookup::corrupt), "byte " << i);
        BOOST_TEST((answer_outcome_query(&s, id).answer == wire::OutcomeAnswer::unknown));
    }
    // Another migration's (valid) record under this id's name.
    OutcomeEntry other;
    other.id = id_of(8);
    other.state = OutcomeState::started;
    put_file(p, encode_outcome_entry(other));
    BOOST_TEST((s.lookup(id).kind == OutcomeLookup::corrupt));
}

BOOST_AUTO_TEST_CASE(expired_records_are_unknown_and_pruned)
{
    TempDir d;
    auto id = id_of(9);
    {
        OutcomeStore s(d.path, std::chrono::seconds(3600));
        OutcomeEntry e;
        e.id = id;
        e.state = OutcomeState::started;
        e.updated_unix_ms = 1000; // 1970
        put_file(s.path_of(id), encode_outcome_entry(e));
        BOOST_TEST((s.lookup(id).kind == OutcomeLookup::expired));
        auto a = answer_outcome_query(&s, id);
        BOOST_TEST((a.answer == wire::OutcomeAnswer::unknown));
        BOOST_TEST(contains(a.message, "expired"), a.message);
        age_file(s.path_of(id), 7200);
    }
    OutcomeStore s2(d.path, std::chrono::seconds(3600)); // prunes on open
    BOOST_TEST((s2.lookup(id).kind == OutcomeLookup::missing));
}

BOOST_AUTO_TEST_CASE(missing_directory_is_created_a_file_is_refused)
{
    TempDir d;
    const std::string nested = d.path + "/a/b/outcomes";
    OutcomeStore s(nested, std::chrono::seconds(60));
    struct stat st{};
    BOOST_TEST(::stat(nested.c_str(), &st) == 0);
    BOOST_TEST((st.st_mode & 0777) == 0700u);
    s.announce(id_of(10), "sim:4");
    put_file(d.path + "/file", {1});
    BOOST_CHECK_THROW(OutcomeStore(d.path + "/file", std::chrono::seconds(60)), Error);
    BOOST_CHECK_THROW(OutcomeStore(d.path + "/file/sub", std::chrono::seconds(60)), Error);
}

BOOST_AUTO_TEST_CASE(a_writer_that_died_mid_write_leaves_the_old_record)
{
    // Crash between writing the temporary file and renaming it: the old
    // record stands, and the next store to open removes the leftover.
    TempDir d;
    auto id = id_of(11);
    {
        OutcomeStore s(d.path, std::chrono::seconds(3600));
        s.announce(id, "sim:5");
    }
    const std::string tmp = d.path + "/.tmp.99999." + wire::migration_id_hex(id);
    OutcomeEntry half;
    half.id = id;
    half.state = OutcomeState::committed;
    auto b = encode_outcome_entry(half);
    b.resize(b.size() / 2);
    put_file(tmp, b);
    OutcomeStore s(d.path, std::chrono::seconds(3600));
    BOOST_TEST(::access(tmp.c_str(), F_OK) != 0);
    BOOST_TEST((s.lookup(id).entry.state == OutcomeState::pending));
}

std::vector<std::string> dir_entries(const std::string& dir)
{
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir))
        names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
}

BOOST_AUTO_TEST_CASE(changes_after_announce_are_written_in_place)
{
    // Only announce (before READY) makes a file and a directory entry; the
    // decisions in the downtime rewrite that file: same inode, same size,
    // no temporary file, no directory change.
    TempDir d;
    OutcomeStore s(d.path, std::chrono::seconds(3600));
    auto id = id_of(20);
    s.announce(id, "sim:20");
    struct stat st0{}, st1{};
    BOOST_REQUIRE(::stat(s.path_of(id).c_str(), &st0) == 0);
    const auto names = dir_entries(d.path);
    BOOST_TEST(s.decide_commit(id));
    s.mark_started(id, 0xabcd);
    s.flush(id);
    BOOST_REQUIRE(::stat(s.path_of(id).c_str(), &st1) == 0);
    BOOST_TEST(st1.st_ino == st0.st_ino);
    BOOST_TEST(st1.st_size == st0.st_size);
    BOOST_TEST(dir_entries(d.path) == names);
    auto l = s.lookup(id);
    BOOST_TEST((l.kind == OutcomeLookup::found && l.entry.state == OutcomeState::started));
    BOOST_TEST(l.entry.verify_digest == 0xabcdu);
}

BOOST_AUTO_TEST_CASE(a_torn_in_place_write_is_never_read_as_not_committed)
{
    // A crash of the host in the middle of an in-place write can leave any
    // mix of the old and the new bytes (prefix new and suffix old, or the
    // other way round).  Each mix must read as the old record (the write
    // did not happen: the receiver never acted on it), the new one, or
    // corrupt: and corrupt is UNKNOWN to a query and refused by decisions.
    Announced rec(21, "sim:21");
    const auto pending = file_bytes(rec.path);
    BOOST_TEST(rec.s.decide_commit(rec.id));
    const auto committed = file_bytes(rec.path);
    BOOST_REQUIRE(pending.size() == committed.size());
    BOOST_REQUIRE(pending != committed);
    int torn = 0;
    for (std::size_t cut = 0; cut <= pending.size(); ++cut)
        for (bool new_first : {true, false}) {
            const auto& first = new_first ? committed : pending;
            const auto& second = new_first ? pending : committed;
            std::vector<std::uint8_t> mix(first.begin(), first.begin() + std::ptrdiff_t(cut));
            mix.insert(mix.end(), second.begin() + std::ptrdiff_t(cut), second.end());
            put_file(rec.path, mix);
            const auto l = rec.s.lookup(rec.id);
            if (mix == pending) {
                BOOST_TEST((l.kind == OutcomeLookup::found && l.entry.state == OutcomeState::pending));
                continue;
            }
            if (mix == committed) {
                BOOST_TEST((l.kind == OutcomeLookup::found && l.entry.state == OutcomeState::committed));
                continue;
            }
            ++torn;
            check_corrupt_is_unknown(rec.s, rec.id, "cut " + std::to_string(cut));
        }
    BOOST_TEST(torn > 0);
}

BOOST_AUTO_TEST_CASE(a_receiver_killed_before_flushing_started_is_still_committed)
{
    // `started` is written before DONE but flushed after it: a receiver
    // killed in between leaves it in the page cache, where the next
    // receiver (another process) reads it.
    TempDir d;
    OutcomeStore s(d.path, std::chrono::seconds(3600));
    auto id = id_of(22);
    pid_t child = ::fork();
    if (child == 0) {
        try {
            OutcomeStore c(d.path, std::chrono::seconds(3600));
            c.announce(id, "sim:22");
            if (c.decide_commit(id))
                c.mark_started(id, 0x5eed);
        } catch (...) {
            ::_exit(12);
        }
        ::kill(::getpid(), SIGKILL);
    }
    int st = 0;
    ::waitpid(child, &st, 0);
    BOOST_REQUIRE(WIFSIGNALED(st));
    auto a = answer_outcome_query(&s, id);
    BOOST_TEST((a.answer == wire::OutcomeAnswer::committed));
    BOOST_TEST(a.verify_digest == 0x5eedu);
}

BOOST_AUTO_TEST_CASE(a_host_crash_that_loses_started_leaves_unknown)
{
    // The host crashed after DONE, before the flush: the disk holds the
    // `committed` that was fdatasync'd before the start.  A query then
    // answers UNKNOWN and changes nothing (the source stays in doubt).
    Announced rec(23, "sim:23");
    BOOST_TEST(rec.s.decide_commit(rec.id));
    const auto on_disk = file_bytes(rec.path);
    rec.s.mark_started(rec.id, 1);
    put_file(rec.path, on_disk);
    BOOST_TEST((answer_outcome_query(&rec.s, rec.id).answer == wire::OutcomeAnswer::unknown));
    BOOST_TEST((rec.s.lookup(rec.id).entry.state == OutcomeState::committed));
}

BOOST_AUTO_TEST_CASE(commit_and_query_race_one_winner)
{
    TempDir d;
    OutcomeStore s(d.path, std::chrono::seconds(3600));
    int commits = 0, refusals = 0;
    for (int i = 0; i < 60; ++i) {
        auto id = id_of(std::uint8_t(100 + i));
        s.announce(id, "sim:6");
        // Both threads start together; alternate which one yields first so
        // that each side wins some of the races.
        std::atomic<int> ready{0};
        bool committed = false;
        wire::OutcomeReply answer;
        auto start = [&](bool yield) {
            ++ready;
            while (ready < 2) {
            }
            if (yield)
                std::this_thread::sleep_for(std::chrono::microseconds(200));
        };
        std::thread q([&] {
            start(i % 2 == 0);
            answer = answer_outcome_query(&s, id);
        });
        std::thread c([&] {
            start(i % 2 == 1);
            committed = s.decide_commit(id);
        });
        q.join();
        c.join();
        // Never both "runs there" and "resume here".
        if (committed) {
            ++commits;
            BOOST_TEST((answer.answer == wire::OutcomeAnswer::unknown)); // committed, not started yet
        } else {
            ++refusals;
            BOOST_TEST((answer.answer == wire::OutcomeAnswer::not_committed));
        }
    }
    BOOST_TEST(commits + refusals == 60);
    BOOST_TEST(commits > 0);
    BOOST_TEST(refusals > 0);
    BOOST_TEST_MESSAGE("commit won " << commits << ", the query " << refusals);
}

BOOST_AUTO_TEST_CASE(two_stores_in_two_processes_share_the_lock)
{
    // A restarted receiver and a dying one: the flock is per process too.
    TempDir d;
    OutcomeStore s(d.path, std::chrono::seconds(3600));
    auto id = id_of(12);
    s.announce(id, "sim:7");
    pid_t child = ::fork();
    if (child == 0) {
        try {
            OutcomeStore c(d.path, std::chrono::seconds(3600));
            ::_exit(c.decide_commit(id) ? 10 : 11);
        } catch (...) {
            ::_exit(12);
        }
    }
    auto a = answer_outcome_query(&s, id);
    int st = 0;
    ::waitpid(child, &st, 0);
    BOOST_REQUIRE(WIFEXITED(st));
    const bool child_committed = WEXITSTATUS(st) == 10;
    BOOST_TEST(WEXITSTATUS(st) != 12);
    BOOST_TEST(child_committed == (a.answer == wire::OutcomeAnswer::unknown));
    BOOST_TEST(!child_committed == (a.answer == wire::OutcomeAnswer::not_committed));
}

BOOST_AUTO_TEST_CASE(outcome_records_round_trip_and_refuse_garbage)
{
    auto id = id_of(13);
    auto q = wire::encode_outcome_query(id);
    BOOST_TEST(q.size() == 16u + 16u);
    BOOST_TEST((wire::parse_outcome_query({q.data() + 16, 16}) == id));
    BOOST_CHECK_THROW(wire::parse_outcome_query({q.data() + 16, 15}), StreamError);
    wire::MigrationId zero{};
    BOOST_CHECK_THROW(wire::parse_migration_id(zero), StreamError);

    wire::OutcomeReply r;
    r.answer = wire::OutcomeAnswer::not_committed;
    r.id = id;
    r.verify_digest = 0x0102030405060708ull;
    r.message = "gone";
    auto rec = wire::encode_outcome(r);
    std::span<const std::uint8_t> body(rec.data() + 16, wire::kOutcomeFixed + 4);
    auto back = wire::parse_outcome(body);
    BOOST_TEST((back.answer == r.answer));
    BOOST_TEST((back.id == id));
    BOOST_TEST(back.verify_digest == r.verify_digest);
    BOOST_TEST(back.message == "gone");
    std::vector<std::uint8_t> b(body.begin(), body.end());
    b[0] = 4;
    BOOST_CHECK_THROW(wire::parse_outcome(b), StreamError);
    b[0] = 0;
    BOOST_CHECK_THROW(wire::parse_outcome(b), StreamError);
    b[0] = 2;
    b[4] = 5; // message_length past the body
    BOOST_CHECK_THROW(wire::parse_outcome(b), StreamError);
    BOOST_CHECK_THROW(wire::parse_outcome({b.data(), 31}), StreamError);
    std::uint8_t one = 0;
    BOOST_CHECK_THROW(wire::parse_done_ack({&one, 1}), StreamError);
}
