// The destination's protocol: the handshake and the channels, ACCEPT or a
// refusal, then (after every channel's records, receive_records.cpp) the
// platform state, READY, COMMIT, the start and DONE; outcome queries.
#include "stream/receiver_internal.hpp"

#include "stream/auth/auth.hpp"
#include "stream/bytes.hpp"
#include "stream/clock.hpp"
#include "stream/failpoint.hpp"
#include "stream/outcome_store.hpp"
#include "stream/transport.hpp"
#include "stream/wire.hpp"

#include <algorithm>
#include <cstdio>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include <sys/socket.h>
#include <unistd.h>

namespace fastmig {

namespace receiving {

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
    error_.rethrow_if_failed();
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

} // namespace receiving

ReceiveResult receive_domain(int fd, DomainProvider& provider, const ReceiveOptions& opt)
{
    receiving::Receiver r(fd, provider, opt);
    return r.run();
}

} // namespace fastmig
