// Each receiving channel's records (docs/stream-format.md, Order of records
// and Receiver states): read, checked against the stream's state, handed to
// the channel's page applier; the timing of the stream's tail.
#include "stream/receiver_internal.hpp"

#include "stream/failpoint.hpp"

#include <algorithm>
#include <string>

#include <sys/mman.h>
#include <sys/socket.h>

namespace fastmig::receiving {

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

void Receiver::read_channel(std::uint32_t c)
{
    Channel& ch = *channels_[c];
    ch.pages = std::make_unique<PageApplier>(pages_, ch.counts, features_);
    ch.applier = std::make_unique<BatchApplier>(
        [this, &ch](wire::PageBatch& b) {
            failpoint("recv:apply-batch");
            ch.pages->apply(*dom_, b);
        },
        "fm-apply-" + std::to_string(c), BatchApplier::kDepth,
        [this, slow = SlowBatchLog()](const wire::PageBatch& b, std::uint64_t took_ns, std::uint64_t now_ns) mutable {
            if (auto line = slow.note(b.round, b.page_count, took_ns, now_ns); line && opt_.log)
                opt_.log(dom_->name() + ": " + *line);
        });
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

namespace {

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

} // namespace

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
    if (error_.set(e)) {
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

} // namespace fastmig::receiving
