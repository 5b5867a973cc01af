// The receiver's parts, shared by receiver.cpp (the protocol: handshake,
// channels, commit) and receive_records.cpp (each channel's records and
// their order).  Not an API: receiver.hpp is; nothing else includes this.
#pragma once

#include "stream/receiver.hpp"

#include "stream/auth/auth.hpp" // kTagSize (receive_records.cpp)
#include "stream/batch_applier.hpp"
#include "stream/clock.hpp"
#include "stream/first_error.hpp"
#include "stream/page_applier.hpp"
#include "stream/tail_timer.hpp"
#include "stream/transport.hpp"
#include "stream/wire.hpp"
#include "stream/wire_writer.hpp"

#include <atomic>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace fastmig::receiving {

// Bound on platform state: a real PV guest has a few dozen blobs (one per
// vCPU plus a handful), so anything above this is a hostile stream.
constexpr std::size_t kMaxStateBlobs = 4096;
constexpr std::uint64_t kMaxStateBytes = 64ull << 20;

// Record buffers: sized for the largest record with huge pages asked for
// (receive_records.cpp says why).
void reserve_record_buffer(std::vector<std::uint8_t>& b);

// One connection of the stream, read by its own thread.
struct Channel {
    Channel(int fd_, std::chrono::milliseconds timeout, bool read_ahead = true)
        : fd(fd_), src(fd_, timeout, read_ahead), reader(src), writer(fd_, timeout)
    {
    }
    int fd;
    Fd owned; // extra channels are owned here; channel 0 belongs to the caller
    SocketSource src;
    wire::RecordReader reader;
    wire::RecordWriter writer; // tags records once the connection is authenticated
    bool magic_sent = false;
    ChannelCounts counts;
    // The second stage and its buffers (read_channel).  They outlive the
    // reading once END is in: freeing a few MiB of record buffers takes
    // tens of ms under TCG, which after END is downtime, so they go with the
    // Receiver, after the domain is handed over.
    std::unique_ptr<BatchApplier> applier;
    std::unique_ptr<PageApplier> pages; // the applier's thread only
};

// Where one channel's stream is.  The rules of docs/stream-format.md (Order
// of records; the diagram under Receiver states) are checked in one place,
// advance(); a record's own case calls it where its checks put it.
//
//   in_round --PAGE_BATCH--> in_round --ROUND_END--> between_rounds
//   between_rounds --PAGE_BATCH--> in_round, --ROUND_END--> between_rounds,
//                  --EARLY_STATE--> between_rounds
//   in_round, between_rounds --PLATFORM_STATE--> platform_state
//   platform_state --PLATFORM_STATE--> platform_state
//   any --END--> ended
enum class StreamState { in_round, between_rounds, platform_state, ended };

// What read_records knows of one channel while it reads.
struct ChannelReading {
    std::uint32_t c;
    Channel& ch;
    BatchApplier& applier;
    StreamState state = StreamState::in_round;
    std::uint32_t open_round = 0;
    std::uint64_t round_pages = 0;
    std::uint64_t read_ns = 0;
    TailTimer tail{mark()};

    TailTimer::Mark mark() const // only once the applier is drained
    {
        return {monotonic_ns(), read_ns, applier.busy_ns(), ch.counts.domain_calls};
    }
};

class Receiver {
public:
    Receiver(int fd, DomainProvider& provider, const ReceiveOptions& opt) : provider_(provider), opt_(opt)
    {
        channels_.push_back(std::make_unique<Channel>(fd, opt.io_timeout, !opt.one_way));
    }
    ReceiveResult run();

private:
    std::optional<ReceiveResult> negotiate();
    void receive_all();
    void restore();
    ReceiveResult hand_over_paused();
    void await_commit();
    void start();
    void report_started();
    [[noreturn]] void fail(const std::exception& ex);
    void accept_or_refuse(const wire::StreamHeader& h, std::uint32_t nr_channels, std::uint64_t session);
    void join_channels(std::uint32_t n, std::uint64_t session);
    [[noreturn]] void refuse(std::uint32_t status, const std::string& why);
    wire::Record first_record(Channel& ch);
    [[noreturn]] void refuse_auth(Channel& ch, const std::string& why);
    void send_on(Channel& ch, std::span<const std::uint8_t> rec);
    void channel_main(std::uint32_t c);
    void read_channel(std::uint32_t c);
    void read_records(std::uint32_t c, Channel& ch, BatchApplier& applier);
    void on_page_batch(ChannelReading& r, wire::Record& rec);
    void on_round_end(ChannelReading& r, const wire::Record& rec);
    void on_early_state(ChannelReading& r, const wire::Record& rec);
    void on_platform_state(ChannelReading& r, const wire::Record& rec);
    void on_end(ChannelReading& r, const wire::Record& rec);
    void send(std::uint32_t c, std::vector<std::uint8_t> rec);
    void send_done(const wire::Done& d) { send(0, wire::encode_done(d)); }
    void channel_failed(std::exception_ptr e);
    ReceiveResult answer_query(std::span<const std::uint8_t> body);
    void read_migration_id(Channel& ch0);
    void await_done_ack(Channel& ch0);
    std::string label() const
    {
        return dom_ ? dom_->name() : (res_.source_name.empty() ? std::string("incoming") : "incoming " + res_.source_name);
    }

    DomainProvider& provider_;
    const ReceiveOptions& opt_;
    std::vector<std::unique_ptr<Channel>> channels_;
    std::unique_ptr<IncomingDomain> dom_;
    bool accepted_ = false; // ACCEPT went out: a failure from here on is reported in DONE
    // Feature OUTCOME: the source's id, and whether its record exists (only
    // then may a failure here write `destroyed` over it).
    std::optional<wire::MigrationId> mid_;
    bool announced_ = false;
    ReceiveResult res_;
    Phase phase_ = Phase::negotiate;
    std::uint64_t features_ = 0;

    DestinationPages pages_; // per-pfn state, written by the channels' PageAppliers

    std::mutex state_lock_;
    std::vector<StateBlob> state_;
    std::uint64_t state_bytes_ = 0;

    std::uint64_t end_ns_ = 0; // when channel 0 read END

    FirstError error_; // the first channel's failure: why the stream stopped
};

} // namespace fastmig::receiving
