#include "evtchn-ipc/hint_session.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>

namespace fastmig::ipc::hints {

namespace {

using Clock = std::chrono::steady_clock;

std::uint32_t load32(const std::uint8_t* p)
{
    return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}

// The answer slot's magic is cleared before each request, and a writer
// stores it last: a zero magic means "not answered yet", not "malformed".
std::uint32_t answer_magic(std::span<const std::uint8_t> region)
{
    std::uint8_t m[4];
    std::memcpy(m, region.data() + kAnswerOffset, 4);
    return load32(m);
}

void clear_answer(std::span<std::uint8_t> region)
{
    std::memset(region.data() + kAnswerOffset, 0, 4);
}

void send_request(MailboxEnd& m, const Request& q)
{
    clear_answer(m.region);
    encode_request(q, m.region.first(kRequestSize));
    // The ring is a syscall or a hypercall (a full barrier); the fence
    // states the order for the reader of this code.
    std::atomic_thread_fence(std::memory_order_release);
    m.notify();
}

} // namespace

const char* outcome_name(HintResult::Outcome o)
{
    switch (o) {
    case HintResult::Outcome::hints: return "hints";
    case HintResult::Outcome::refused: return "refused";
    case HintResult::Outcome::timed_out: return "timed out";
    case HintResult::Outcome::invalid: return "invalid";
    }
    return "?";
}

HintResult request_free_ranges(MailboxEnd& m, std::uint64_t nr_pages, std::uint32_t seq,
                               std::chrono::milliseconds timeout, Limits limits)
{
    HintResult res;
    const auto start = Clock::now();
    const auto deadline = start + timeout;
    auto finish = [&](HintResult::Outcome o, std::string why) {
        res.outcome = o;
        res.why = std::move(why);
        res.elapsed_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
        return res;
    };
    const std::size_t per = ranges_per_batch(m.region.size());
    if (per == 0 || m.region.size() > kMaxRegionPages * kRegionPageSize)
        return finish(HintResult::Outcome::invalid,
                      "a shared region of " + std::to_string(m.region.size()) + " bytes cannot carry the protocol");
    const std::span<std::uint8_t> slot = m.region.subspan(kAnswerOffset);
    std::vector<std::uint8_t> copy(slot.size());
    AnswerParser parser(nr_pages, seq, limits);
    Request q{RequestType::scan, seq, 0, nr_pages, std::uint32_t(per)};
    send_request(m, q);
    std::uint32_t spurious = 0;
    while (parser.status() == AnswerParser::Status::more) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) {
            send_request(m, Request{RequestType::done, seq, 0, nr_pages, 0});
            return finish(HintResult::Outcome::timed_out,
                          "no answer within " + std::to_string(timeout.count()) + " ms (batch " +
                              std::to_string(parser.next_batch()) + " asked for, " + std::to_string(spurious) +
                              " wake-ups without an answer)");
        }
        if (!m.wait(left))
            continue;
        std::atomic_thread_fence(std::memory_order_acquire);
        if (answer_magic(m.region) == 0) {
            ++spurious;
            continue;
        }
        // One copy, then judge the copy only: the header says how long the
        // message is, and the parser checks the copy is that long.
        AnswerHeader h;
        std::string why;
        std::memcpy(copy.data(), slot.data(), kAnswerHeaderSize);
        std::size_t n = kAnswerHeaderSize;
        if (decode_answer_header({copy.data(), n}, slot.size(), h, why))
            n += kRangeSize * std::size_t(h.count);
        std::memcpy(copy.data(), slot.data(), n);
        parser.feed({copy.data(), n});
        if (parser.status() == AnswerParser::Status::more) {
            q = Request{RequestType::next, seq, parser.next_batch(), nr_pages, std::uint32_t(per)};
            send_request(m, q);
        }
    }
    // A complete (or refused) session needs no `done`: the agent dropped
    // its scan with the last batch, and dom0 must not write the request
    // slot now, when nothing orders that write after the agent's last read
    // of it (the next session's request comes after its answer, so it is
    // ordered).  A broken one gets `done`: the agent may still hold a scan.
    if (parser.status() == AnswerParser::Status::invalid)
        send_request(m, Request{RequestType::done, seq, 0, nr_pages, 0});
    res.batches = parser.next_batch();
    res.agent_scan_ns = parser.scan_ns();
    switch (parser.status()) {
    case AnswerParser::Status::complete:
        res.ranges = parser.ranges();
        res.pages = parser.total_pages();
        return finish(HintResult::Outcome::hints, "");
    case AnswerParser::Status::refused:
        return finish(HintResult::Outcome::refused, refuse_reason_name(parser.reason()));
    default:
        return finish(HintResult::Outcome::invalid, parser.error());
    }
}

bool HintServer::handle(MailboxEnd& m, std::string* why)
{
    if (m.region.size() < kAnswerOffset + kAnswerHeaderSize)
        return false;
    std::uint8_t raw[kRequestSize];
    std::memcpy(raw, m.region.data(), kRequestSize);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (load32(raw) == 0)
        return false; // nothing asked yet
    Request q;
    std::string err;
    if (!decode_request({raw, kRequestSize}, q, err)) {
        Request bad;
        bad.seq = load32(raw + 8);
        bad.batch = load32(raw + 12);
        if (have_last_ && last_.seq == bad.seq && last_.batch == bad.batch && last_.type == RequestType(0))
            return false;
        last_ = bad;
        last_.type = RequestType(0);
        have_last_ = true;
        if (why)
            *why = err;
        refuse(m, bad, RefuseReason::bad_request);
        return true;
    }
    if (have_last_ && last_.type == q.type && last_.seq == q.seq && last_.batch == q.batch)
        return false; // answered already (a second ring, or our own)
    last_ = q;
    have_last_ = true;
    switch (q.type) {
    case RequestType::done:
        ranges_ = {};
        scanned_ = false;
        return false;
    case RequestType::scan: {
        ScanResult s = scan_(q.nr_pages);
        ranges_ = {};
        scanned_ = false;
        if (s.refused) {
            if (why)
                *why = refuse_reason_name(s.refuse);
            refuse(m, q, s.refuse);
            return true;
        }
        // dom0's pfn count rules: what lies past it is not dom0's to skip.
        pages_ = 0;
        for (const Range& r : s.ranges) {
            if (r.first >= q.nr_pages || r.count == 0)
                continue;
            Range c{r.first, std::min(r.count, q.nr_pages - r.first)};
            ranges_.push_back(c);
            pages_ += c.count;
        }
        scan_ns_ = s.scan_ns;
        seq_ = q.seq;
        per_batch_ = std::uint32_t(std::min<std::size_t>(q.max_ranges, ranges_per_batch(m.region.size())));
        scanned_ = true;
        answer(m, q, 0);
        return true;
    }
    case RequestType::next: {
        const std::uint64_t first = std::uint64_t(q.batch) * per_batch_;
        if (!scanned_ || q.seq != seq_ || q.batch == 0 || first >= ranges_.size()) {
            if (why)
                *why = "next batch " + std::to_string(q.batch) + " of request " + std::to_string(q.seq) +
                       " without a matching scan";
            refuse(m, q, RefuseReason::no_scan);
            return true;
        }
        answer(m, q, q.batch);
        return true;
    }
    }
    return false;
}

namespace {

// Ranges first, then the header, its magic very last: dom0 reads a zero
// magic as "not yet", so it never judges a half-written answer of an
// honest agent.
void publish(MailboxEnd& m, const AnswerHeader& h)
{
    std::uint8_t head[kAnswerHeaderSize];
    encode_answer_header(h, {head, sizeof head});
    std::uint8_t* slot = m.region.data() + kAnswerOffset;
    std::memcpy(slot + 4, head + 4, kAnswerHeaderSize - 4);
    std::atomic_thread_fence(std::memory_order_release);
    std::memcpy(slot, head, 4);
    m.notify();
}

} // namespace

void HintServer::answer(MailboxEnd& m, const Request& q, std::uint32_t batch)
{
    const std::size_t first = std::min(std::size_t(batch) * per_batch_, ranges_.size());
    const std::size_t n = std::min<std::size_t>(per_batch_, ranges_.size() - first);
    AnswerHeader h;
    h.type = AnswerType::ranges;
    h.seq = q.seq;
    h.batch = batch;
    h.count = std::uint32_t(n);
    h.flags = first + n >= ranges_.size() ? kLastBatch : 0;
    h.total_ranges = ranges_.size();
    h.total_pages = pages_;
    h.scan_ns = scan_ns_;
    encode_ranges(std::span(ranges_).subspan(first, n), m.region.subspan(kAnswerOffset + kAnswerHeaderSize));
    publish(m, h);
    if (h.last()) {
        // dom0 asks no more of this scan, and sends no `done` after a
        // complete one (hint_session.cpp, request_free_ranges).
        ranges_ = {};
        scanned_ = false;
    }
}

void HintServer::refuse(MailboxEnd& m, const Request& q, RefuseReason r)
{
    AnswerHeader h;
    h.type = AnswerType::refused;
    h.seq = q.seq;
    h.batch = q.batch;
    h.flags = kLastBatch;
    h.reason = r;
    publish(m, h);
}

} // namespace fastmig::ipc::hints
