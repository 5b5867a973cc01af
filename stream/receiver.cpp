#include "stream/receiver.hpp"

#include "stream/auth.hpp"
#include "stream/batch_applier.hpp"
#include "stream/bytes.hpp"
#include "stream/clock.hpp"
#include "stream/failpoint.hpp"
#include "stream/outcome_store.hpp"
#include "stream/page_applier.hpp"
#include "stream/tail_timer.hpp"
#include "stream/transport.hpp"
#include "stream/wire.hpp"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

namespace fastmig {

namespace {

// Bound on platform state: a real PV guest has a few dozen blobs (one per
// vCPU plus a handful), so anything above this is a hostile stream.
constexpr std::size_t kMaxStateBlobs = 4096;
constexpr std::uint64_t kMaxStateBytes = 64ull << 20;

// Record buffers: a full PAGE_BATCH is ~4 MiB and a channel cycles four of
// them (the reader's and the applier's slots).  Grown by the reader's
// resize, they were faulted in 4 KiB at a time: ~9% of the receiver's CPU
// in a perf profile of a raw 1 GiB send/receive here (issue 16), where a
// page fault is dear.  Reserved whole first, with huge pages asked for,
// they fault in 2 MiB at a time (THP in madvise mode; advisory).
void reserve_record_buffer(std::vector<std::uint8_t>& b)
{
    constexpr std::size_t kHuge = std::size_t{2} << 20;
    constexpr std::size_t kWant = wire::kMaxRecordBody + 8 + auth::kTagSize; // body, pad, tag
    if (b.capacity() >= kWant)
        return;
    b.reserve(kWant);
    const auto a = reinterpret_cast<std::uintptr_t>(b.data());
    const std::uintptr_t lo = (a + b.size() + kHuge - 1) & ~(kHuge - 1); // leave bytes in use alone
    const std::uintptr_t hi = (a + b.capacity()) & ~(kHuge - 1);
    if (hi > lo)
        (void)::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
}

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
    auth::RecordWriter writer; // tags records once the connection is authenticated
    bool magic_sent = false;
    ChannelCounts counts;
    // The second stage and its buffers (read_channel).  They outlive the
    // reading once END is in: freeing a few MiB of record buffers takes
    // tens of ms under TCG, which after END is downtime, so they go with the
    // Receiver, after the domain is handed over.
    std::unique_ptr<BatchApplier> applier;
    std::unique_ptr<PageApplier> pages; // the applier's thread only
};

struct ChannelReading;

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

    std::mutex error_lock_;
    std::exception_ptr error_;
    std::atomic<bool> failed_{false};
};

void Receiver::send_on(Channel& ch, std::span<const std::uint8_t> rec)
{
    if (opt_.one_way)
        return; // nobody reads: the source learns of failures from its caller
    std::span<const std::uint8_t> prefix;
    if (!ch.magic_sent) {
        ch.magic_sent = true;
        prefix = {wire::kReplyMagic.data(), wire::kReplyMagic.size()};
    }
    ch.writer.write(rec, prefix);
}

void Receiver::send(std::uint32_t c, std::vector<std::uint8_t> rec) { send_on(*channels_[c], rec); }

void Receiver::refuse_auth(Channel& ch, const std::string& why)
{
    try {
        send_on(ch, wire::encode_accept({wire::kAcceptAuth, why}));
    } catch (...) {
        // A source that hung up cannot hear it; the error below says why.
    }
    throw AuthError(why);
}

// The first record of every connection decides (docs/stream-format.md,
// Authentication): AUTH_HELLO starts the handshake, which needs a key here;
// anything else is refused when this side has a key.  Returns the first
// record after the handshake: nothing is trusted before it.
wire::Record Receiver::first_record(Channel& ch)
{
    auto rec = ch.reader.read();
    const bool hello = rec.type == wire::RecordType::auth_hello;
    if (opt_.psk.empty() && !hello)
        return rec;
    const Phase was = phase_;
    phase_ = Phase::authenticate;
    if (!hello)
        refuse_auth(ch, "this destination requires authentication: give the source the same --psk-file");
    if (opt_.psk.empty())
        refuse_auth(ch, "this destination has no pre-shared key: give it the same --psk-file, or none to the source");
    try {
        auth::authenticate_source(opt_.psk, rec.body, ch.writer, ch.reader, opt_.suite);
    } catch (const AuthError& e) {
        refuse_auth(ch, e.cause());
    }
    ch.magic_sent = true; // it went with AUTH_CHALLENGE
    phase_ = was;
    return ch.reader.read();
}

void Receiver::refuse(std::uint32_t status, const std::string& why)
{
    try {
        send(0, wire::encode_accept({status, why}));
    } catch (...) {
        // The refusal is also thrown below; a source that is gone cannot hear it.
    }
    throw Error("refused the domain: " + why);
}

void Receiver::join_channels(std::uint32_t n, std::uint64_t session)
{
    std::vector<bool> have(n, false);
    have[0] = true;
    channels_.resize(n);
    for (std::uint32_t k = 1; k < n; ++k) {
        Fd fd(opt_.accept_channel(opt_.io_timeout));
        auto ch = std::make_unique<Channel>(fd.get(), opt_.io_timeout);
        try {
            wire::read_magic(ch->src, wire::kSourceMagic);
        } catch (const StreamError& e) {
            throw StreamError("extra connection " + std::to_string(k) + " is not a fastmig channel (" + e.cause() + ")");
        }
        auto rec = first_record(*ch);
        if (rec.type != wire::RecordType::channel_hello)
            throw StreamError(std::string("expected CHANNEL_HELLO on an extra connection, got ") +
                              wire::record_type_name(static_cast<std::uint32_t>(rec.type)));
        auto hello = wire::parse_channel_hello(rec.body);
        if (hello.session != session)
            throw StreamError("a connection of another migration joined this one (session mismatch)");
        if (hello.index >= n || have[hello.index])
            throw StreamError("channel_hello: index " + std::to_string(hello.index) + " is out of range or repeated");
        have[hello.index] = true;
        ch->owned = std::move(fd);
        channels_[hello.index] = std::move(ch);
        // The reply direction opens at once, so the source can check it.
        send(hello.index, {});
    }
}

void Receiver::accept_or_refuse(const wire::StreamHeader& h, std::uint32_t nr_channels, std::uint64_t session)
{
    if (h.features & ~wire::kKnownFeatures) {
        char b[32];
        std::snprintf(b, sizeof b, "%llx", (unsigned long long)(h.features & ~wire::kKnownFeatures));
        refuse(wire::kAcceptBadFeatures, std::string("unknown stream features 0x") + b);
    }
    if (std::find(opt_.kinds.begin(), opt_.kinds.end(), h.domain_kind) == opt_.kinds.end())
        refuse(wire::kAcceptBadKind, "this receiver cannot build domains of kind " + std::to_string(h.domain_kind));
    if (opt_.max_memory_bytes && h.nr_pages * kPageSize > opt_.max_memory_bytes)
        refuse(wire::kAcceptNoMemory, "domain of " + std::to_string(h.nr_pages * kPageSize >> 20) +
                                          " MiB exceeds the receiver's limit of " +
                                          std::to_string(opt_.max_memory_bytes >> 20) + " MiB");
    if (bool(h.features & wire::kFeatureOneWay) != opt_.one_way)
        refuse(wire::kAcceptBadFeatures,
               opt_.one_way ? "a two-way stream (fastmig send) on a one-way input: this end cannot answer it"
                            : "a one-way stream (an image written by libxl's save helper): restore it through "
                              "libxl (xl restore / migrate-receive with fastmig's libxl-save-helper)");
    if ((h.features & wire::kFeatureOneWay) && (h.features & (wire::kFeatureChannels | wire::kFeatureVerify)))
        refuse(wire::kAcceptBadFeatures, "a one-way stream cannot have several channels or a verify digest");
    if ((h.features & wire::kFeatureEarlyState) && nr_channels > 1)
        refuse(wire::kAcceptBadFeatures, "early state on a stream of " + std::to_string(nr_channels) +
                                             " channels: it may only travel on a stream of one");
    if (nr_channels > 1 && !opt_.accept_channel)
        refuse(wire::kAcceptBadFeatures, "this receiver takes one connection per migration, not " +
                                             std::to_string(nr_channels));
    try {
        provider_.check_capacity(h.nr_pages, h.domain_kind, h.domain_name);
    } catch (const std::exception& e) {
        refuse(wire::kAcceptNoMemory, e.what());
    }
    features_ = h.features;
    res_.channels = nr_channels;

    // Every check that can refuse is above (the provider's among them:
    // address space and memory).  Building the domain (a process
    // for a sim guest, populating a Xen domain) takes tens of milliseconds,
    // so it runs while the source opens its channels and reads, encodes and
    // sends the first pages, which wait in the socket buffers meanwhile.  A
    // domain that cannot be built after ACCEPT is reported in DONE (status
    // error): the source resumes its own, as after any later failure.
    phase_ = Phase::restore;
    struct Building {
        std::future<std::unique_ptr<IncomingDomain>> f;
        // Left unclaimed (an error below): destroy what was built.
        ~Building()
        {
            if (!f.valid())
                return;
            try {
                if (auto d = f.get())
                    d->destroy();
            } catch (const std::exception&) {
            }
        }
    } building{std::async(std::launch::async, [this, &h] {
        return provider_.create(h.nr_pages, h.domain_kind, h.domain_name);
    })};
    res_.nr_pages = h.nr_pages;
    res_.verify = h.features & wire::kFeatureVerify;
    pages_.reset(h.nr_pages, res_.verify);
    send(0, wire::encode_accept({wire::kAcceptOk, ""}));
    accepted_ = true;
    // The source opens its other channels once it has read ACCEPT.
    if (nr_channels > 1)
        join_channels(nr_channels, session);
    try {
        dom_ = building.f.get();
    } catch (const std::exception& e) {
        throw Error(std::string("cannot create the domain: ") + e.what());
    }
    // A receiver that dies before COMMIT must not leave this copy behind.
    dom_->set_orphan_policy(OrphanPolicy::destroy);
    res_.domain = dom_->name();
    // Still before any page is read (libxl's static_data_done goes here).
    if (opt_.accepted)
        opt_.accepted(*dom_);
}

void Receiver::read_channel(std::uint32_t c)
{
    Channel& ch = *channels_[c];
    ch.pages = std::make_unique<PageApplier>(pages_, ch.counts, features_);
    ch.applier = std::make_unique<BatchApplier>(
        [this, &ch](wire::PageBatch& b) { ch.pages->apply(*dom_, b); },
        "fm-apply-" + std::to_string(c));
    try {
        // The reader's own buffer too (the records before the pages are
        // done with: nothing points into it any more).
        std::vector<std::uint8_t> first;
        reserve_record_buffer(first);
        ch.reader.swap_buffer(first);
        read_records(c, ch, *ch.applier);
    } catch (...) {
        // A failed stream stops its applier before anything else happens to
        // the domain (the receiver destroys it next).
        ch.applier.reset();
        throw;
    }
}

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

StreamState advance(StreamState s, wire::RecordType t)
{
    switch (t) {
    case wire::RecordType::page_batch:
        if (s == StreamState::platform_state)
            throw StreamError("page batch after platform state");
        return StreamState::in_round;
    case wire::RecordType::round_end:
        if (s == StreamState::platform_state)
            throw StreamError("ROUND_END after platform state");
        return StreamState::between_rounds;
    case wire::RecordType::early_state:
        if (s != StreamState::between_rounds)
            throw StreamError("early state must follow a ROUND_END and precede the platform state");
        return s;
    case wire::RecordType::platform_state: return StreamState::platform_state;
    case wire::RecordType::end: return StreamState::ended;
    default: break;
    }
    throw StreamError(std::string("unexpected ") + wire::record_type_name(static_cast<std::uint32_t>(t)) +
                      " record from the source");
}

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

void Receiver::read_records(std::uint32_t c, Channel& ch, BatchApplier& applier)
{
    const auto nch = static_cast<std::uint32_t>(channels_.size());
    ChannelReading r{c, ch, applier};
    // A read that fails (timeout, reset) says on which channel and where in
    // the stream: with several channels, "peer sent nothing" alone does not
    // tell a stalled channel from a stalled source.
    auto next = [&] {
        try {
            const std::uint64_t t0 = monotonic_ns();
            auto rec = ch.reader.read();
            r.read_ns += monotonic_ns() - t0;
            return rec;
        } catch (const Error& e) {
            // A broken format names its record already; an I/O failure gets
            // the channel and how far it was.
            if (e.is_stream() || nch == 1 || e.has_context())
                throw;
            raise(e.relabelled("channel " + std::to_string(c) + " (round " + std::to_string(r.open_round) + ", " +
                               std::to_string(r.round_pages) + " pages of it read): " + e.cause()));
        }
    };
    while (r.state != StreamState::ended) {
        auto rec = next();
        switch (rec.type) {
        case wire::RecordType::page_batch: on_page_batch(r, rec); break;
        case wire::RecordType::round_end: on_round_end(r, rec); break;
        case wire::RecordType::early_state: on_early_state(r, rec); break;
        case wire::RecordType::platform_state: on_platform_state(r, rec); break;
        case wire::RecordType::end: on_end(r, rec); break;
        default:
            throw StreamError(std::string("unexpected ") +
                              wire::record_type_name(static_cast<std::uint32_t>(rec.type)) +
                              " record from the source on channel " + std::to_string(c));
        }
    }
}

void Receiver::on_page_batch(ChannelReading& r, wire::Record& rec)
{
    r.state = advance(r.state, rec.type);
    const auto nch = static_cast<std::uint32_t>(channels_.size());
    // A page is never applied before its CRC passed: read() checked the CRC
    // (or the tag) over the whole body before returning it, and only then is
    // the batch parsed and handed to the applier.  (Receiving pages straight
    // into guest memory would write them before the check and must then
    // fail the migration on a bad CRC; on this host it would not pay anyway:
    // see sim_domain.cpp.)
    BatchApplier::Slot& slot = r.applier.slot();
    reserve_record_buffer(slot.body); // the reader reads the next records into it
    r.ch.reader.swap_buffer(slot.body); // rec.body now lives in the slot
    wire::PageBatch& batch = slot.batch;
    wire::parse_page_batch(rec.body, res_.nr_pages, batch);
    // One connection delivers rounds in order (0, 1, 2... each closed by its
    // ROUND_END), and a pfn always travels on the same channel, so the last
    // copy of a page written is always its newest.
    if (batch.round != r.open_round)
        throw StreamError("page batch of round " + std::to_string(batch.round) + " while round " +
                          std::to_string(r.open_round) + " is open");
    for (const auto& d : batch.pages)
        if (wire::channel_of(d.pfn, nch) != r.c)
            throw StreamError("pfn " + std::to_string(d.pfn) + " arrived on channel " + std::to_string(r.c) +
                              ", it belongs to channel " + std::to_string(wire::channel_of(d.pfn, nch)));
    r.tail.batch_read();
    r.round_pages += batch.page_count;
    r.applier.submit(slot);
}

void Receiver::on_round_end(ChannelReading& r, const wire::Record& rec)
{
    auto re = wire::parse_round_end(rec.body);
    if (re.round != r.open_round)
        throw StreamError("ROUND_END of round " + std::to_string(re.round) + " while round " +
                          std::to_string(r.open_round) + " is open");
    r.state = advance(r.state, rec.type);
    ++r.open_round;
    if (r.c == 0 && re.round == 0)
        failpoint("recv:mid-precopy");
    // Every page of the round is in the domain once the applier has caught
    // up: tell the source, which paces itself on it.
    r.applier.drain();
    send(r.c, wire::encode_round_ack({re.round, r.round_pages}));
    r.tail.round_closed(re.round, r.round_pages, r.mark());
    r.round_pages = 0;
}

void Receiver::on_early_state(ChannelReading& r, const wire::Record& rec)
{
    // Only between rounds (after a ROUND_END or another early blob), before
    // any platform state, and only if announced; the stream has one channel
    // (accept_or_refuse), so every page sent before it is in the domain once
    // this channel's applier is drained.
    if (!(features_ & wire::kFeatureEarlyState))
        throw StreamError("early state, but the header did not announce it");
    r.state = advance(r.state, rec.type);
    // Used at once, not kept: only the record's own limit applies.
    auto es = wire::parse_early_state(rec.body);
    r.applier.drain();
    dom_->early_state({es.state_type, {es.data.begin(), es.data.end()}});
}

void Receiver::on_platform_state(ChannelReading& r, const wire::Record& rec)
{
    if (r.c != 0)
        throw StreamError("platform state on channel " + std::to_string(r.c) + " (only channel 0 carries it)");
    if (r.state != StreamState::platform_state) {
        failpoint("recv:stop-copy"); // the source is suspended by now
        r.tail.state_started(r.round_pages, r.state == StreamState::between_rounds);
    }
    r.state = advance(r.state, rec.type);
    auto ps = wire::parse_platform_state(rec.body);
    std::lock_guard<std::mutex> l(state_lock_);
    state_bytes_ += ps.data.size();
    if (state_.size() >= kMaxStateBlobs || state_bytes_ > kMaxStateBytes)
        throw StreamError("platform state exceeds " + std::to_string(kMaxStateBlobs) + " blobs or " +
                          std::to_string(kMaxStateBytes >> 20) + " MiB");
    state_.push_back({ps.state_type, {ps.data.begin(), ps.data.end()}});
}

void Receiver::on_end(ChannelReading& r, const wire::Record& rec)
{
    wire::parse_end(rec.body);
    const std::uint64_t end_ns = monotonic_ns();
    if (r.c == 0)
        end_ns_ = end_ns; // read by run() after this thread is joined
    r.applier.drain();
    if (r.state != StreamState::platform_state)
        r.tail.ended_without_state(r.round_pages);
    r.state = advance(r.state, rec.type);
    if (opt_.log) {
        std::string where = channels_.size() > 1 ? " on channel " + std::to_string(r.c) : "";
        opt_.log(label() + ": the stream's tail" + where + ": " + r.tail.describe(end_ns, r.mark()));
    }
    std::lock_guard<std::mutex> l(state_lock_);
    res_.rounds = std::max(res_.rounds, r.open_round);
    r.ch.counts.bytes = r.ch.reader.bytes_read() + wire::kSourceMagic.size();
}

void Receiver::channel_failed(std::exception_ptr e)
{
    {
        std::lock_guard<std::mutex> l(error_lock_);
        if (!error_)
            error_ = e;
    }
    if (!failed_.exchange(true)) {
        // Wake the other channels' readers; the write sides stay open so the
        // source can still be told why (DONE on channel 0).
        for (auto& ch : channels_)
            ::shutdown(ch->fd, SHUT_RD);
    }
}

void Receiver::channel_main(std::uint32_t c)
{
    try {
        read_channel(c);
    } catch (...) {
        channel_failed(std::current_exception());
    }
}

// The destination's protocol, step by step (docs/stream-format.md, Order
// of records): read the header and accept or refuse it, receive every
// channel's rounds, restore the platform state, then either hand the
// paused domain to the caller (one-way) or ask for COMMIT, start the domain
// and report it started.  Any failure before the start destroys the copy
// and tells the source (fail).
ReceiveResult Receiver::run()
{
    try {
        if (auto query = negotiate())
            return *query;
        receive_all();
        restore();
        if (opt_.one_way)
            return hand_over_paused();
        await_commit();
        start();
        report_started();
        return res_;
    } catch (const std::exception& ex) {
        fail(ex);
    }
}

// Magic, HEADER (or an outcome query, answered instead), CHANNELS,
// MIGRATION_ID, then ACCEPT or a refusal.
std::optional<ReceiveResult> Receiver::negotiate()
{
    phase_ = Phase::negotiate;
    Channel& ch0 = *channels_[0];
    try {
        wire::read_magic(ch0.src, wire::kSourceMagic);
    } catch (const StreamError& e) {
        throw StreamError("the peer is not a fastmig sender (" + e.cause() + ")");
    }
    auto rec = first_record(ch0);
    if (rec.type == wire::RecordType::outcome_query)
        return answer_query(rec.body);
    if (opt_.queries_only && rec.type == wire::RecordType::header)
        refuse(wire::kAcceptInternal, "this receiver took its one migration and now only answers outcome "
                                      "queries (fastmig receive --keep-listening takes more)");
    if (rec.type != wire::RecordType::header)
        throw StreamError(std::string("expected HEADER first, got ") +
                          wire::record_type_name(static_cast<std::uint32_t>(rec.type)));
    // A source speaking another version gets a refusal it can report,
    // not a dropped connection: the version field never moves.
    if (rec.body.size() >= 4) {
        const auto v = bytes::load_le<std::uint32_t>(rec.body.data());
        if (!wire::readable_version(v))
            refuse(wire::kAcceptBadVersion, "stream version " + std::to_string(v) +
                                                " is not supported (this receiver speaks version " +
                                                wire::readable_versions() + ")");
    }
    auto h = wire::parse_header(rec.body);
    res_.source_name = h.domain_name;
    wire::Channels chans;
    if (h.features & wire::kFeatureChannels) {
        rec = ch0.reader.read();
        if (rec.type != wire::RecordType::channels)
            throw StreamError(std::string("expected CHANNELS after HEADER, got ") +
                              wire::record_type_name(static_cast<std::uint32_t>(rec.type)));
        chans = wire::parse_channels(rec.body);
    }
    if (h.features & wire::kFeatureOutcome)
        read_migration_id(ch0);
    accept_or_refuse(h, chans.count, chans.session);
    if (mid_) {
        // Before READY, hence before any COMMIT: a source that asks
        // later always finds its migration here.
        opt_.outcomes->announce(*mid_, dom_->name());
        announced_ = true;
    }
    failpoint("recv:before-round0");
    return std::nullopt;
}

// Every channel's rounds until its END; then every pfn must have come.
void Receiver::receive_all()
{
    phase_ = Phase::receive;
    Stopwatch recv;
    {
        std::vector<std::thread> threads;
        for (std::uint32_t c = 1; c < channels_.size(); ++c)
            threads.emplace_back([this, c] {
                name_this_thread("fm-recv-" + std::to_string(c));
                channel_main(c);
            });
        channel_main(0);
        for (auto& t : threads)
            t.join();
    }
    if (failed_)
        std::rethrow_exception(error_);
    res_.receive_ms = recv.seconds() * 1e3;
    for (auto& ch : channels_) {
        res_.bytes_received += ch->counts.bytes;
        res_.pages_written += ch->counts.written;
        res_.pages_zeroed += ch->counts.zeroed;
        res_.pages_deflate += ch->counts.deflate;
        res_.pages_xbzrle += ch->counts.xbzrle;
    }

    // Never start a domain with memory the stream did not cover.
    std::uint64_t seen = pages_.seen.count();
    if (seen != res_.nr_pages)
        throw StreamError("the stream ended with " + std::to_string(res_.nr_pages - seen) + " pages never sent");
}

void Receiver::restore()
{
    phase_ = Phase::restore;
    if (opt_.one_way && opt_.log) {
        char after[48] = "";
        if (end_ns_)
            std::snprintf(after, sizeof after, " %.1f ms after END", double(monotonic_ns() - end_ns_) / 1e6);
        opt_.log(label() + ": stream complete (" + std::to_string(res_.rounds) + " rounds)" + after +
                 ", restoring the platform state");
    }
    Stopwatch timer;
    dom_->restore_state(state_);
    res_.restore_ms = timer.seconds() * 1e3;
}

// One-way: built and paused, the domain goes to the caller.
ReceiveResult Receiver::hand_over_paused()
{
    Channel& ch0 = *channels_[0];
    // Built and paused: the caller starts it (libxl, after its own
    // records and, for a migration, xl's handshake).
    phase_ = Phase::finish;
    res_.bytes_received = ch0.reader.bytes_read() + wire::kSourceMagic.size();
    dom_->set_orphan_policy(OrphanPolicy::none);
    if (opt_.built)
        opt_.built(*dom_, res_);
    return res_;
}

// READY, then COMMIT (within commit_timeout).
void Receiver::await_commit()
{
    Channel& ch0 = *channels_[0];
    // Built and paused: ask for COMMIT.  Until it arrives the source owns
    // the domain, so any failure here destroys this copy.
    phase_ = Phase::commit;
    wire::Ready ready;
    ready.pages_written = res_.pages_written;
    ready.bytes_received = res_.bytes_received;
    // verify_digest stays 0 here: the digest is computed after the
    // domain runs (it reads 8 bytes per page: milliseconds for a large
    // guest, which would otherwise count as downtime) and goes in DONE.
    send(0, wire::encode_ready(ready));
    if (mid_ && opt_.outcome_pending)
        opt_.outcome_pending(*mid_, true);
    failpoint("recv:after-ready");
    ch0.src.set_timeout(opt_.commit_timeout);
    auto rec = ch0.reader.read();
    if (rec.type != wire::RecordType::commit)
        throw StreamError(std::string("expected COMMIT after READY, got ") +
                          wire::record_type_name(static_cast<std::uint32_t>(rec.type)));
    wire::parse_commit(rec.body);
    res_.bytes_received += ch0.reader.bytes_read() + wire::kSourceMagic.size() - ch0.counts.bytes;
}

// The decision on disk first, then the domain runs.
void Receiver::start()
{
    phase_ = Phase::resume;
    // Write-ahead: the decision is on disk before the domain runs, and
    // an outcome query that came first (the source gave up waiting)
    // wins: then this copy never runs.
    if (announced_ && !opt_.outcomes->decide_commit(*mid_))
        throw Error("COMMIT arrived after the source's outcome query had given the migration up; not started");
    dom_->unpause(); // drops the orphan policy in the same step
    res_.resumed_at_ns = dom_->clock().resumed_at_ns;
    // Running here from now on: no failure below may destroy it.
    phase_ = Phase::finish;
    // The checksums were taken from the stream as it was applied, so
    // computing their digest now, with the guest running, is exact.
    if (res_.verify)
        res_.verify_digest = wire::page_digest(pages_.sums);
    if (announced_) {
        try {
            opt_.outcomes->mark_started(*mid_, res_.verify_digest);
        } catch (const std::exception& e) {
            // The domain runs regardless; a query would get `unknown`.
            if (opt_.log)
                opt_.log(label() + ": finish: the domain runs, but its outcome record was not updated (" +
                         e.what() + ")");
        }
    }
    failpoint("recv:after-commit");
}

// DONE to the source; the outcome record to disk; DONE_ACK.
void Receiver::report_started()
{
    Channel& ch0 = *channels_[0];
    wire::Done d;
    d.status = 0;
    d.resumed_at_ns = res_.resumed_at_ns;
    d.pages_written = res_.pages_written;
    d.bytes_received = res_.bytes_received;
    d.verify_digest = res_.verify_digest;
    try {
        send_done(d);
    } catch (const std::exception& e) {
        res_.done_delivered = false;
        res_.done_error = e.what();
        if (opt_.log)
            opt_.log(label() + ": finish: the domain runs here, but DONE did not reach the source (" +
                     e.what() + "); the source keeps its copy paused until an admin destroys it");
    }
    if (announced_) {
        // `started` went to the page cache before DONE (queries and a
        // restarted receiver see it); to the disk only now, outside the
        // source's wait.
        try {
            opt_.outcomes->flush(*mid_);
        } catch (const std::exception& e) {
            if (opt_.log)
                opt_.log(label() + ": finish: the domain runs, but its outcome record was not flushed (" +
                         e.what() + "): a crash of this host would leave it `committed` (a query: unknown)");
        }
    }
    if (mid_ && res_.done_delivered)
        await_done_ack(ch0);
}

// Any failure, labelled with the domain and phase.  Before the start the
// copy is destroyed (and its outcome recorded) and the source told in DONE,
// so that it keeps its domain running.
void Receiver::fail(const std::exception& ex)
{
    std::string cause = ex.what();
    Phase ph = phase_;
    std::string who = label();
    if (auto* e = dynamic_cast<const Error*>(&ex)) {
        cause = e->cause();
        if (e->has_context()) {
            ph = e->phase();
            who = e->domain();
        }
        if (e->kind() == ErrorKind::stream)
            cause = "malformed stream: " + cause;
    }
    if ((dom_ || accepted_) && phase_ != Phase::finish) {
        if (announced_) {
            // Before the copy goes: from here a query says "not committed".
            try {
                opt_.outcomes->decide_destroyed_by_owner(*mid_);
            } catch (const std::exception& o) {
                cause += std::string("; recording the outcome failed: ") + o.what();
            }
        }
        if (dom_) {
            try {
                dom_->destroy();
                cause += "; the incoming domain was destroyed";
            } catch (const std::exception& d) {
                cause += std::string("; destroying the incoming domain failed: ") + d.what();
            }
        }
        // Tell the source, which then keeps its domain running.
        try {
            wire::Done d;
            d.status = 1;
            d.message = cause.substr(0, wire::kMaxMessageLength);
            send_done(d);
        } catch (...) {
        }
    }
    throw Error(who, ph, cause);
}

// MIGRATION_ID follows HEADER (and CHANNELS) with feature OUTCOME.
void Receiver::read_migration_id(Channel& ch0)
{
    auto rec = ch0.reader.read();
    if (rec.type != wire::RecordType::migration_id)
        throw StreamError(std::string("expected MIGRATION_ID after HEADER, got ") +
                          wire::record_type_name(static_cast<std::uint32_t>(rec.type)));
    auto id = wire::parse_migration_id(rec.body);
    if (!opt_.outcomes)
        refuse(wire::kAcceptBadFeatures, "this receiver keeps no outcome records (feature OUTCOME)");
    mid_ = id;
}

// A connection that asks what became of a migration (the source lost its
// own after COMMIT): one answer, then the connection ends.
ReceiveResult Receiver::answer_query(std::span<const std::uint8_t> body)
{
    phase_ = Phase::commit;
    const auto id = wire::parse_outcome_query(body);
    const auto reply = answer_outcome_query(opt_.outcomes, id);
    if (opt_.log)
        opt_.log("outcome query for migration " + wire::migration_id_hex(id) + ": " +
                 wire::outcome_answer_name(reply.answer) + " (" + reply.message + ")");
    send(0, wire::encode_outcome(reply));
    res_.query_id = id;
    res_.query_answer = reply.answer;
    return res_;
}

// After DONE, the source's DONE_ACK says it has the outcome: nobody will
// ask.  Without it (a cut, an old source) the caller keeps listening for
// the query a while.
void Receiver::await_done_ack(Channel& ch0)
{
    try {
        ch0.src.set_timeout(opt_.done_ack_timeout);
        auto rec = ch0.reader.read();
        if (rec.type != wire::RecordType::done_ack)
            return;
        wire::parse_done_ack(rec.body);
        if (opt_.outcome_pending)
            opt_.outcome_pending(*mid_, false);
    } catch (const std::exception& e) {
        if (opt_.log)
            opt_.log(label() + ": finish: no DONE_ACK from the source (" + e.what() + "); it may ask for the outcome");
    }
}

} // namespace

ReceiveResult receive_domain(int fd, DomainProvider& provider, const ReceiveOptions& opt)
{
    Receiver r(fd, provider, opt);
    return r.run();
}

} // namespace fastmig
