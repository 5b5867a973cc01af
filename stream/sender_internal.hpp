// The sender's parts, shared by sender.cpp (the migration's steps: set up,
// precopy, stop-and-copy, finish, roll back), send_opening.cpp (the stream's
// opening: keys, header, ACCEPT, the other channels) and send_commit.cpp
// (COMMIT, DONE, and a lost COMMIT's resolution).  Not an API: sender.hpp
// is; nothing else includes this.
#pragma once

#include "stream/sender.hpp"

#include "stream/auth/auth.hpp"
#include "stream/clock.hpp"
#include "stream/transport.hpp"
#include "stream/wire.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace fastmig::sending {

// What a one-way stream may leave in its pipe or socket at a round's end: the
// default pipe size, so the final backlog is what stock libxc's would be.
constexpr std::size_t kOneWayBacklog = 64 * 1024;

// One connection's reply direction (destination to source).
struct ReplyChannel {
    ReplyChannel(int fd, std::chrono::milliseconds timeout) : src(fd, timeout), reader(src) {}
    SocketSource src;
    wire::RecordReader reader;
};

class Sender {
public:
    Sender(Domain& dom, int fd, const SendOptions& opt);

    SendResult run();

private:
    // The steps of run(), in order.
    void set_up();
    void precopy();
    void stop_and_copy();
    SendResult finish();
    SendResult hand_over(); // one-way: instead of finish()
    [[noreturn]] void roll_back(const Error& e);

    // send_opening.cpp
    void negotiate();
    void send_opening(std::span<const std::uint8_t> prefix);
    void check_accept(const wire::Accept& a);
    void explain_failed_opening();
    void authenticate(unsigned channel);
    // Opens a connection: authenticates it with a key, or starts it with
    // the magic; returns the prefix the first record must carry (the magic
    // when unauthenticated, nothing otherwise).
    std::span<const std::uint8_t> open_connection(unsigned channel);
    void read_reply_magic(unsigned channel);

    // send_commit.cpp
    void check_peer_before_commit();
    wire::Done commit();
    wire::Done resolve_lost_commit(const std::string& lost);

    void read_free_hints();
    void run_round(unsigned round, const DirtyBitmap* dirty, bool stop_copy);
    Decision judge_round();
    void send_state();
    void send_early_state();
    void send_control(std::vector<std::uint8_t> rec);
    wire::Record next_reply(unsigned channel, wire::RecordType want);
    void wait_round_acks(unsigned round);
    wire::Ready wait_ready();
    void report(bool force);
    void log(const std::string& line)
    {
        if (opt_.log)
            opt_.log(line);
    }
    std::string peer_reason();
    std::uint64_t features() const;
    void take_counters();

    Domain& dom_;
    std::vector<int> fds_;
    std::vector<Fd> owned_; // the extra channels' sockets
    const SendOptions& opt_;
    PrecopyPolicy policy_;
    std::vector<std::unique_ptr<ReplyChannel>> replies_;
    std::vector<std::unique_ptr<wire::RecordWriter>> writers_; // per channel; tags records once keyed
    std::unique_ptr<SendPipeline> pipe_;
    SendResult res_;
    Phase phase_ = Phase::setup;
    Stopwatch total_;
    Stopwatch last_progress_;
    Stopwatch paused_; // restarted when the domain is suspended
    RoundStats cur_;
    unsigned round_ = 0; // the round being sent (the last one: stop-and-copy)
    std::uint64_t round_target_ = 0;
    std::uint64_t round_base_pages_ = 0;
    std::uint64_t control_bytes_ = 0; // records written outside the pipeline
    DirtyBitmap dirty_;     // what the next round sends (after round 0)
    DirtyBitmap free_;      // free-page hints read before round 0
    DirtyBitmap sent_free_; // pages whose last copy sent was FREE
    bool suspended_ = false;
    bool committing_ = false; // COMMIT may have left: never resume from here
    std::uint64_t session_ = 0; // names this migration's extra channels to the destination
    std::optional<wire::MigrationId> mid_; // feature OUTCOME: what the destination records our outcome under
};

} // namespace fastmig::sending
