#include "stream/sender_internal.hpp"

#include "stream/failpoint.hpp"
#include "stream/wire_outcome.hpp"

#include <cstdio>

namespace fastmig::sending {

Sender::Sender(Domain& dom, int fd, const SendOptions& opt) : dom_(dom), fds_{fd}, opt_(opt), policy_(opt.policy)
{
    if (opt_.channels < 1 || opt_.channels > wire::kMaxChannels)
        throw Error("channels must be 1.." + std::to_string(wire::kMaxChannels));
    if (opt_.channels > 1 && !opt_.connect_channel)
        throw Error("several channels need a way to connect them");
    if (opt_.one_way && (opt_.channels != 1 || opt_.verify || !opt_.psk.empty()))
        throw Error("a one-way stream has one channel, no verification and no authentication (no reply comes "
                    "back)");
    if (opt_.pipeline.batch_pages == 0 || opt_.pipeline.batch_pages > wire::kMaxBatchPages)
        throw Error("batch size must be 1.." + std::to_string(wire::kMaxBatchPages) + " pages");
    replies_.push_back(std::make_unique<ReplyChannel>(fd, opt.io_timeout));
    writers_.push_back(std::make_unique<wire::RecordWriter>(fd, opt.io_timeout));
}

SendResult Sender::run()
{
    res_.domain = dom_.name();
    res_.nr_pages = dom_.nr_pages();
    res_.channels = opt_.channels;
    res_.threads = opt_.pipeline.threads;
    try {
        set_up();
        precopy();
        stop_and_copy();
        if (opt_.one_way)
            return hand_over();
        return finish();
    } catch (const Error& e) {
        roll_back(e);
    }
}

// Negotiates the stream and starts the pipeline.
void Sender::set_up()
{
    // If this process dies before COMMIT, the domain runs on here.
    dom_.set_orphan_policy(OrphanPolicy::resume);
    negotiate();
    res_.negotiate_ms = total_.seconds() * 1e3;
    Stopwatch setup;
    std::vector<wire::RecordWriter*> ws;
    for (auto& w : writers_)
        ws.push_back(w.get());
    pipe_ = std::make_unique<SendPipeline>(dom_, ws, opt_.pipeline);
    phase_ = Phase::precopy;
    failpoint("send:before-round0");
    dirty_ = DirtyBitmap(dom_.nr_pages());
    res_.setup_ms = setup.seconds() * 1e3;
}

void Sender::read_free_hints()
{
    if (opt_.free_page_hints) {
        free_.resize(dom_.nr_pages());
        if (dom_.free_page_hints(free_) == 0)
            free_ = DirtyBitmap();
    }
}

// Live rounds while the policy asks for more (none when not live).
void Sender::precopy()
{
    Stopwatch precopy;
    if (opt_.live) {
        dom_.enable_dirty_log();
        // Read after logging started: a free page the guest uses from now
        // on is dirty and goes again with its data.
        read_free_hints();
    }
    while (opt_.live) {
        Stopwatch rt;
        run_round(round_, round_ == 0 ? nullptr : &dirty_, false);
        // Wait until the destination has applied the round: the round's
        // time is then the end-to-end rate (not the rate at which socket
        // buffers filled), and no backlog is left in flight to be
        // drained inside the downtime.
        wait_round_acks(round_);
        cur_.seconds = rt.seconds();
        send_early_state();
        cur_.dirty_after = dom_.fetch_and_clear_dirty(dirty_);
        Decision d = judge_round();
        if (round_ == 0)
            failpoint("send:mid-precopy");
        ++round_;
        if (d.stop) {
            res_.stop_reason = d.reason;
            res_.stop_why = d.why;
            break;
        }
    }
    res_.precopy_ms = precopy.seconds() * 1e3;
}

// The policy's decision after a precopy round, kept in the round's figures
// and logged.
Decision Sender::judge_round()
{
    RoundSample s{round_, cur_.pages, cur_.pages - cur_.zero_pages - cur_.free_pages, cur_.bytes, cur_.seconds,
                  cur_.dirty_after};
    Decision d = policy_.after_round(s);
    pipe_->update_rates();
    cur_.predicted_downtime_ms = d.predicted_downtime_ms;
    cur_.compression = pipe_->compression_verdict();
    res_.round_stats.push_back(cur_);
    report(true);
    char line[240];
    std::snprintf(line, sizeof line,
                  "round %u: %llu pages (%llu zero, %llu deflate, %llu xbzrle), %.1f MiB in %.1f ms; ", round_,
                  (unsigned long long)cur_.pages, (unsigned long long)cur_.zero_pages,
                  (unsigned long long)cur_.deflate_pages, (unsigned long long)cur_.xbzrle_pages,
                  double(cur_.bytes) / (1 << 20), cur_.seconds * 1e3);
    log(line + d.why + (cur_.compression ? "; compression: " + cur_.compression->why() : std::string()));
    return d;
}

// Suspends the domain and sends the rest: the last pages, the platform
// state, END on every channel.  All of this is downtime.
void Sender::stop_and_copy()
{
    phase_ = Phase::stop_copy;
    Stopwatch sc;
    dom_.suspend(opt_.suspend_timeout);
    suspended_ = true;
    failpoint("send:stop-copy");
    res_.paused_at_ns = dom_.clock().paused_at_ns;
    paused_.restart();
    // Left to send: the set fetched after the last precopy round (which
    // the policy judged small enough) plus whatever the guest dirtied
    // between that fetch and the suspension.
    // Its parts are logged: all of this is downtime.
    double fetched_ms = 0, pages_ms = 0, state_ms = 0;
    if (opt_.live) {
        DirtyBitmap late(dom_.nr_pages());
        dom_.fetch_and_clear_dirty(late);
        dirty_.merge(late);
        fetched_ms = paused_.seconds() * 1e3;
        run_round(round_, &dirty_, true);
    } else {
        // Not live: the guest stopped before any page went, so one round
        // of every page is the whole image (hints are stable now).
        read_free_hints();
        run_round(round_, nullptr, true);
    }
    pages_ms = paused_.seconds() * 1e3;
    send_state();
    state_ms = paused_.seconds() * 1e3;
    for (unsigned c = 1; c < fds_.size(); ++c)
        pipe_->send_record(c, wire::encode_end());
    pipe_->send_record(0, wire::encode_end());
    pipe_->drain();
    char line[240];
    std::snprintf(line, sizeof line,
                  "stop-and-copy: %llu pages, %.2f MiB, state and END written %.1f ms after the suspension "
                  "(dirty log read at %.1f ms, pages written at %.1f ms, state read at %.1f ms)",
                  (unsigned long long)cur_.pages, double(cur_.bytes) / (1 << 20), paused_.seconds() * 1e3, fetched_ms,
                  pages_ms, state_ms);
    log(line);
    cur_.seconds = sc.seconds();
    cur_.compression = pipe_->compression_verdict();
    res_.round_stats.push_back(cur_);
    res_.stop_copy_ms = sc.seconds() * 1e3;
    res_.rounds = round_ + 1;
    report(true);
}

// READY, COMMIT, DONE: the domain runs at the destination.  Then the source
// is verified (if asked) and released.
SendResult Sender::finish()
{
    Stopwatch ready_wait;
    wait_ready(); // READY carries nothing the source needs: the digest comes in DONE
    res_.ready_wait_ms = ready_wait.seconds() * 1e3;
    failpoint("send:before-commit");
    Stopwatch commit_wait;
    wire::Done done = commit();
    res_.commit_ms = commit_wait.seconds() * 1e3;
    res_.source_downtime_ms = paused_.seconds() * 1e3;
    res_.resumed_at_ns = done.resumed_at_ns;
    double to_done_ms = total_.seconds() * 1e3;
    // From here the destination runs the domain: the source must never
    // be resumed again, whatever happens below.
    suspended_ = false;
    committing_ = false;
    take_counters();
    pipe_.reset();

    if (opt_.verify) {
        phase_ = Phase::verify;
        auto sums = domain_checksums(dom_, sent_free_.size() ? &sent_free_ : nullptr);
        res_.source_digest = wire::page_digest(sums);
        res_.destination_digest = done.verify_digest;
        res_.verified = res_.source_digest == res_.destination_digest;
    }
    Stopwatch rel;
    if (opt_.release_source)
        dom_.release();
    res_.release_ms = rel.seconds() * 1e3;
    res_.total_ms = to_done_ms + res_.release_ms;
    return res_;
}

// Whatever failed, the source domain runs on here (resumed if it was
// suspended), except in doubt after COMMIT; the error says which it is.
void Sender::roll_back(const Error& e)
{
    pipe_.reset(); // stop every pipeline thread before touching the domain
    std::string cause = e.cause();
    if (committing_) {
        // The one case where resuming could run the domain twice.
        cause += "; the domain is kept PAUSED here (in doubt). Check the destination: if the domain runs "
                 "there, destroy it here; if not, resume it here. Never both.";
        if (mid_)
            cause += " (On the destination, the receiver's outcome record " + wire::migration_id_hex(*mid_) +
                     ".outcome in its --outcome-dir says 'started' if it ran there.)";
        throw InDoubtError(e.has_context() ? e.domain() : dom_.name(), Phase::commit, cause);
    }
    // One-way: nothing ever comes back, and io_fd may be write-only.
    if (!opt_.one_way && phase_ != Phase::finish && phase_ != Phase::negotiate && phase_ != Phase::commit &&
        phase_ != Phase::authenticate) {
        std::string why = peer_reason();
        if (!why.empty())
            cause += " (destination: " + why + ")";
    }
    if (phase_ != Phase::verify) {
        try {
            dom_.disable_dirty_log();
        } catch (const std::exception&) {
        }
    }
    if (suspended_) {
        try {
            dom_.resume();
            cause += "; the domain was resumed on the source";
        } catch (const std::exception& r) {
            cause += std::string("; RESUMING THE SOURCE FAILED: ") + r.what();
        }
    } else if (phase_ != Phase::verify) {
        try {
            dom_.set_orphan_policy(OrphanPolicy::none);
        } catch (const std::exception&) {
        }
        // Say what is true now: a guest that shut down or crashed by
        // itself mid-migration (Xen: the suspend found it shut down)
        // must not be reported as running.
        cause += dom_.running() ? "; the domain keeps running on the source"
                                : "; the domain stays on the source but is NOT running there (fastmig did not "
                                  "suspend it: it shut down, crashed or was paused by someone else)";
    }
    if (e.has_context())
        throw Error(e.domain(), e.phase(), cause);
    throw Error(dom_.name(), phase_, cause);
}

std::uint64_t Sender::features() const
{
    std::uint64_t f = wire::kFeatureRuns;
    if (opt_.verify)
        f |= wire::kFeatureVerify;
    if (opt_.pipeline.compression.algorithm != codec::Algorithm::none)
        f |= wire::kFeatureDeflate;
    if (opt_.pipeline.xbzrle_cache_bytes)
        f |= wire::kFeatureXbzrle;
    if (opt_.channels > 1)
        f |= wire::kFeatureChannels;
    if (opt_.one_way)
        f |= wire::kFeatureOneWay;
    // With several channels the early state could overtake pages of other
    // channels at the destination: one channel only.
    if (opt_.live && opt_.channels <= 1 && dom_.offers_early_state())
        f |= wire::kFeatureEarlyState;
    if (!opt_.one_way && opt_.resolve.connect)
        f |= wire::kFeatureOutcome;
    return f;
}

void Sender::send_control(std::vector<std::uint8_t> rec)
{
    control_bytes_ += writers_[0]->write(rec);
}

void Sender::report(bool force)
{
    if (!force && last_progress_.seconds() < 0.1)
        return;
    last_progress_.restart();
    if (!opt_.progress)
        return;
    Progress p;
    p.round = cur_.round;
    p.stop_copy = cur_.stop_copy;
    auto c = pipe_->counters();
    p.pages_done = c.pages - round_base_pages_; // pages of this round written so far
    p.pages_round = round_target_;
    p.bytes_total = c.wire_bytes + control_bytes_;
    p.elapsed_s = total_.seconds();
    p.bandwidth = policy_.bandwidth_bytes_per_s();
    opt_.progress(p);
}

// Queues every page of the round (all of them in round 0), waits until they
// are written, closes the round on every channel and waits for the
// destination to acknowledge it on every channel.
void Sender::run_round(unsigned round, const DirtyBitmap* dirty, bool stop_copy)
{
    cur_ = RoundStats{};
    cur_.round = round;
    cur_.stop_copy = stop_copy;
    auto before = pipe_->counters();
    round_base_pages_ = before.pages;
    std::vector<std::uint64_t> per_channel(fds_.size(), 0);
    const auto nch = static_cast<std::uint32_t>(fds_.size());
    auto queue = [&](Pfn p) {
        pipe_->add(p, round);
        ++per_channel[wire::channel_of(p, nch)];
        // Often enough that the compression verdict follows within a small
        // guest's first round too (update_rates samples at most every
        // CompressionGate::kUpdateInterval).
        if ((p & 0x3ff) == 0) {
            pipe_->update_rates();
            report(false);
        }
    };
    if (!dirty) {
        round_target_ = dom_.nr_pages();
        for (Pfn p = 0; p < dom_.nr_pages(); ++p) {
            if (free_.size() && free_.test(p)) {
                pipe_->add_free(p, round);
                ++per_channel[wire::channel_of(p, nch)];
            } else {
                queue(p);
            }
        }
        sent_free_ = free_;
    } else {
        round_target_ = dirty->count();
        dirty->for_each_set([&](Pfn p) {
            queue(p);
            if (sent_free_.size())
                sent_free_.clear(p); // the guest took the page back: sent with data now
        });
    }
    pipe_->drain();
    for (std::uint32_t c = 0; c < nch; ++c)
        pipe_->send_record(c, wire::encode_round_end({round, per_channel[c]}));
    pipe_->drain();
    auto after = pipe_->counters();
    cur_.pages = after.pages - before.pages;
    cur_.zero_pages = after.zero_pages - before.zero_pages;
    cur_.free_pages = after.free_pages - before.free_pages;
    cur_.deflate_pages = after.deflate_pages - before.deflate_pages;
    cur_.xbzrle_pages = after.xbzrle_pages - before.xbzrle_pages;
    cur_.bytes = after.wire_bytes - before.wire_bytes;
    res_.pages_zero += cur_.zero_pages;
    res_.pages_free += cur_.free_pages;
    res_.pages_data += cur_.pages - cur_.zero_pages - cur_.free_pages;
}

// After every precopy round (drained: each of its pages went before), so
// that the destination prepares while the next round runs, and has little
// left to do with the last one, which arrives while the guest suspends.
// Queued, not waited for.
void Sender::send_early_state()
{
    if (!(features() & wire::kFeatureEarlyState))
        return;
    for (const auto& blob : dom_.early_state()) {
        // encode_early_state refuses a blob above the stream's limit.
        pipe_->send_record(0, wire::encode_early_state(blob.type, blob.data));
        ++res_.early_state_blobs;
    }
}

void Sender::send_state()
{
    phase_ = Phase::state;
    for (const auto& blob : dom_.save_state()) {
        // encode_platform_state refuses a blob above the stream's limit.
        pipe_->send_record(0, wire::encode_platform_state(blob.type, blob.data));
    }
}

// Reads the next reply on a channel; a DONE with an error status there means
// the destination gave up, and its reason is the error.
wire::Record Sender::next_reply(unsigned channel, wire::RecordType want)
{
    wire::Record rec{};
    try {
        rec = replies_[channel]->reader.read();
    } catch (const StreamError&) {
        throw;
    } catch (const Error& e) {
        if (replies_.size() == 1 || e.has_context())
            throw;
        throw Error("channel " + std::to_string(channel) + ", waiting for " +
                    wire::record_type_name(static_cast<std::uint32_t>(want)) + ": " + e.cause());
    }
    if (rec.type == wire::RecordType::done && want != wire::RecordType::done) {
        auto d = wire::parse_done(rec.body);
        throw Error("the destination gave up: " + (d.message.empty() ? std::string("no reason given") : d.message));
    }
    if (rec.type != want)
        throw StreamError(std::string("expected ") + wire::record_type_name(static_cast<std::uint32_t>(want)) +
                          " from the destination, got " +
                          wire::record_type_name(static_cast<std::uint32_t>(rec.type)));
    return rec;
}

void Sender::wait_round_acks(unsigned round)
{
    if (opt_.one_way) {
        // No ROUND_ACK comes back; the nearest thing is this end's own queue.
        // Waiting for the pipe or socket to empty keeps what the policy
        // measures end to end (not the rate at which a 4 MiB pipe fills)
        // and leaves no backlog that the destination would still be
        // applying when the guest stops.  A reader that takes nothing for
        // io_timeout shows in the next write anyway: no error here.
        for (int fd : fds_)
            wait_drained(fd, kOneWayBacklog, opt_.io_timeout);
        return;
    }
    for (unsigned c = 0; c < fds_.size(); ++c) {
        auto ack = wire::parse_round_ack(next_reply(c, wire::RecordType::round_ack).body);
        if (ack.round != round)
            throw StreamError("channel " + std::to_string(c) + ": ROUND_ACK of round " + std::to_string(ack.round) +
                              " while waiting for round " + std::to_string(round));
    }
}

std::string Sender::peer_reason()
{
    // After a failure, the destination may have said why it gave up.
    try {
        replies_[0]->src.set_timeout(opt_.peer_reason_timeout);
        for (int i = 0; i < 4; ++i) { // acks of earlier rounds may come first
            auto rec = replies_[0]->reader.read();
            if (rec.type == wire::RecordType::done) {
                auto d = wire::parse_done(rec.body);
                return d.status != 0 ? d.message : std::string();
            }
        }
    } catch (...) {
    }
    return {};
}

wire::Ready Sender::wait_ready()
{
    phase_ = Phase::finish;
    for (auto& r : replies_)
        r->src.set_timeout(opt_.done_timeout);
    // The last round is acknowledged like the others, before READY.
    wait_round_acks(res_.rounds - 1);
    return wire::parse_ready(next_reply(0, wire::RecordType::ready).body);
}

// The pipeline's counters into the result; the pipeline itself stays (its
// teardown is the caller's to time).
void Sender::take_counters()
{
    auto c = pipe_->counters();
    res_.bytes_sent = c.wire_bytes + control_bytes_;
    res_.pages_deflate = c.deflate_pages;
    res_.pages_xbzrle = c.xbzrle_pages;
    res_.deflate_in = c.deflate_in;
    res_.deflate_out = c.deflate_out;
    res_.xbzrle_hits = c.xbzrle_hits;
    res_.xbzrle_misses = c.xbzrle_misses;
}

// One-way: END is out and nothing will come back.  The domain stays
// suspended and belongs to the caller from here (libxl destroys it after a
// save, or after xl's own handshake with the destination; or resumes it), so
// the hold that would resume it if this process died is dropped.
SendResult Sender::hand_over()
{
    phase_ = Phase::finish;
    dom_.set_orphan_policy(OrphanPolicy::none);
    suspended_ = false;
    try {
        dom_.handed_over();
    } catch (const std::exception& e) {
        // The stream is complete: the domain still goes to the caller.
        log(std::string("handing the domain over: ") + e.what());
    }
    take_counters();
    res_.total_ms = total_.seconds() * 1e3;
    if (opt_.on_handover)
        opt_.on_handover(res_);
    // Only now: joining the pipeline's threads and freeing its buffers and
    // the XBZRLE cache took 60-125 ms in the nested harness, and the caller
    // (libxl) waits for on_handover, not for this.
    pipe_.reset();
    return res_;
}

} // namespace fastmig::sending

namespace fastmig {

SendResult send_domain(Domain& dom, int fd, const SendOptions& opt)
{
    sending::Sender s(dom, fd, opt);
    return s.run();
}

} // namespace fastmig
