#include "evtchn-ipc/free_hints.hpp"

#include <algorithm>
#include <cstring>
#include <string_view>

namespace fastmig::ipc::hints {

namespace {

// Little endian, byte by byte: the slot holds no aligned C structs (a
// hostile writer cannot make a compiler assumption wrong).
template <class T>
T load(const std::uint8_t* p)
{
    T v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i)
        v |= T(p[i]) << (8 * i);
    return v;
}

template <class T>
void store(std::uint8_t* p, T v)
{
    for (std::size_t i = 0; i < sizeof(T); ++i)
        p[i] = std::uint8_t(v >> (8 * i));
}

std::string num(std::uint64_t v) { return std::to_string(v); }

} // namespace

const char* refuse_reason_name(RefuseReason r)
{
    switch (r) {
    case RefuseReason::no_kpageflags: return "the agent cannot read /proc/kpageflags";
    case RefuseReason::page_poisoning: return "the guest poisons freed pages (a zero page would fail its check)";
    case RefuseReason::bad_request: return "the agent could not parse the request";
    case RefuseReason::no_scan: return "the agent holds no scan for this request";
    case RefuseReason::unknown: break;
    }
    return "unknown reason";
}

std::size_t ranges_per_batch(std::size_t region_bytes)
{
    if (region_bytes < kAnswerOffset + kAnswerHeaderSize)
        return 0;
    return (region_bytes - kAnswerOffset - kAnswerHeaderSize) / kRangeSize;
}

std::size_t encode_request(const Request& r, std::span<std::uint8_t> out)
{
    if (out.size() < kRequestSize)
        return 0;
    std::uint8_t* p = out.data();
    std::memset(p, 0, kRequestSize);
    store<std::uint32_t>(p, kRequestMagic);
    store<std::uint16_t>(p + 4, kVersion);
    store<std::uint16_t>(p + 6, std::uint16_t(r.type));
    store<std::uint32_t>(p + 8, r.seq);
    store<std::uint32_t>(p + 12, r.batch);
    store<std::uint64_t>(p + 16, r.nr_pages);
    store<std::uint32_t>(p + 24, r.max_ranges);
    return kRequestSize;
}

bool decode_request(std::span<const std::uint8_t> in, Request& out, std::string& why)
{
    if (in.size() < kRequestSize) {
        why = "request of " + num(in.size()) + " bytes (needs " + num(kRequestSize) + ")";
        return false;
    }
    const std::uint8_t* p = in.data();
    if (load<std::uint32_t>(p) != kRequestMagic) {
        why = "request magic is wrong";
        return false;
    }
    if (auto v = load<std::uint16_t>(p + 4); v != kVersion) {
        why = "request version " + num(v) + " (this agent speaks " + num(kVersion) + ")";
        return false;
    }
    auto type = load<std::uint16_t>(p + 6);
    if (type < 1 || type > 3) {
        why = "request type " + num(type) + " is unknown";
        return false;
    }
    Request r;
    r.type = RequestType(type);
    r.seq = load<std::uint32_t>(p + 8);
    r.batch = load<std::uint32_t>(p + 12);
    r.nr_pages = load<std::uint64_t>(p + 16);
    r.max_ranges = load<std::uint32_t>(p + 24);
    if (r.type != RequestType::done && r.max_ranges == 0) {
        why = "request allows 0 ranges per batch";
        return false;
    }
    if (r.type == RequestType::scan && r.batch != 0) {
        why = "scan request for batch " + num(r.batch) + " (a scan starts at batch 0)";
        return false;
    }
    out = r;
    return true;
}

std::size_t encode_answer_header(const AnswerHeader& h, std::span<std::uint8_t> out)
{
    if (out.size() < kAnswerHeaderSize)
        return 0;
    std::uint8_t* p = out.data();
    std::memset(p, 0, kAnswerHeaderSize);
    store<std::uint32_t>(p, kAnswerMagic);
    store<std::uint16_t>(p + 4, kVersion);
    store<std::uint16_t>(p + 6, std::uint16_t(h.type));
    store<std::uint32_t>(p + 8, h.seq);
    store<std::uint32_t>(p + 12, h.batch);
    store<std::uint32_t>(p + 16, h.flags);
    store<std::uint32_t>(p + 20, h.count);
    store<std::uint64_t>(p + 24, h.total_ranges);
    store<std::uint64_t>(p + 32, h.total_pages);
    store<std::uint64_t>(p + 40, h.scan_ns);
    store<std::uint32_t>(p + 48, std::uint32_t(h.reason));
    return kAnswerHeaderSize;
}

std::size_t encode_ranges(std::span<const Range> ranges, std::span<std::uint8_t> out)
{
    if (out.size() / kRangeSize < ranges.size())
        return 0;
    std::uint8_t* p = out.data();
    for (const Range& r : ranges) {
        store<std::uint64_t>(p, r.first);
        store<std::uint64_t>(p + 8, r.count);
        p += kRangeSize;
    }
    return kRangeSize * ranges.size();
}

std::size_t encode_answer(const AnswerHeader& h, std::span<const Range> ranges, std::span<std::uint8_t> out)
{
    const std::size_t n = kAnswerHeaderSize + kRangeSize * ranges.size();
    if (out.size() < n || ranges.size() != h.count)
        return 0;
    encode_answer_header(h, out);
    encode_ranges(ranges, out.subspan(kAnswerHeaderSize));
    return n;
}

bool decode_answer_header(std::span<const std::uint8_t> in, std::size_t slot_bytes, AnswerHeader& out,
                          std::string& why)
{
    if (in.size() < kAnswerHeaderSize) {
        why = "answer of " + num(in.size()) + " bytes is shorter than its header";
        return false;
    }
    const std::uint8_t* p = in.data();
    if (load<std::uint32_t>(p) != kAnswerMagic) {
        why = "answer magic is wrong";
        return false;
    }
    if (auto v = load<std::uint16_t>(p + 4); v != kVersion) {
        why = "answer version " + num(v) + " (expected " + num(kVersion) + ")";
        return false;
    }
    auto type = load<std::uint16_t>(p + 6);
    if (type != 1 && type != 2) {
        why = "answer type " + num(type) + " is unknown";
        return false;
    }
    AnswerHeader h;
    h.type = AnswerType(type);
    h.seq = load<std::uint32_t>(p + 8);
    h.batch = load<std::uint32_t>(p + 12);
    h.flags = load<std::uint32_t>(p + 16);
    h.count = load<std::uint32_t>(p + 20);
    h.total_ranges = load<std::uint64_t>(p + 24);
    h.total_pages = load<std::uint64_t>(p + 32);
    h.scan_ns = load<std::uint64_t>(p + 40);
    h.reason = RefuseReason(load<std::uint32_t>(p + 48));
    if (h.flags & ~kLastBatch) {
        why = "answer flags " + num(h.flags) + " has unknown bits";
        return false;
    }
    const std::size_t room = slot_bytes < kAnswerHeaderSize ? 0 : (slot_bytes - kAnswerHeaderSize) / kRangeSize;
    if (h.count > room) {
        why = "batch " + num(h.batch) + " claims " + num(h.count) + " ranges; the slot holds " + num(room);
        return false;
    }
    if (h.type == AnswerType::refused && h.count != 0) {
        why = "a refusal carries " + num(h.count) + " ranges";
        return false;
    }
    out = h;
    return true;
}

namespace {

// A decimal number of at most `digits` digits, nothing else.
bool parse_decimal(std::string_view t, std::uint64_t max, std::uint64_t& out)
{
    if (t.empty() || t.size() > 10)
        return false;
    std::uint64_t v = 0;
    for (char c : t) {
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + std::uint64_t(c - '0');
    }
    if (v > max)
        return false;
    out = v;
    return true;
}

std::string quoted(const std::string& t)
{
    return "'" + (t.size() > 40 ? t.substr(0, 40) + "..." : t) + "'";
}

} // namespace

bool parse_protocol(const std::string& text, std::uint16_t& out, std::string& why)
{
    std::uint64_t v;
    if (!parse_decimal(text, 0xffff, v)) {
        why = "protocol " + quoted(text) + " is not a version number";
        return false;
    }
    if (v != kVersion) {
        why = "the agent speaks protocol " + num(v) + ", this dom0 " + num(kVersion);
        return false;
    }
    out = std::uint16_t(v);
    return true;
}

bool parse_ring_refs(const std::string& text, std::vector<std::uint32_t>& out, std::string& why)
{
    std::vector<std::uint32_t> refs;
    std::string_view t = text;
    // Words separated by one space: an empty word (leading, trailing or
    // double space) is refused like any other non-number.
    for (bool more = !t.empty(); more;) {
        std::size_t sp = t.find(' ');
        std::string_view w = t.substr(0, sp);
        std::uint64_t v;
        if (!parse_decimal(w, 0xffffffffu, v) || v == 0) {
            why = "ring-ref " + quoted(text) + ": '" + std::string(w.substr(0, 12)) + "' is not a grant reference";
            return false;
        }
        if (refs.size() == kMaxRegionPages) {
            why = "ring-ref lists more than " + num(kMaxRegionPages) + " pages";
            return false;
        }
        refs.push_back(std::uint32_t(v));
        more = sp != std::string_view::npos;
        t = more ? t.substr(sp + 1) : std::string_view();
    }
    if (refs.empty()) {
        why = "ring-ref is empty";
        return false;
    }
    out = std::move(refs);
    return true;
}

bool parse_port(const std::string& text, std::uint32_t& out, std::string& why)
{
    std::uint64_t v;
    if (!parse_decimal(text, kMaxPort, v) || v == 0) {
        why = "event-channel " + quoted(text) + " is not a port";
        return false;
    }
    out = std::uint32_t(v);
    return true;
}

std::string format_ring_refs(std::span<const std::uint32_t> refs)
{
    std::string s;
    for (std::uint32_t r : refs)
        s += (s.empty() ? "" : " ") + num(r);
    return s;
}

AnswerParser::AnswerParser(std::uint64_t nr_pages, std::uint32_t seq, Limits limits)
    : nr_pages_(nr_pages), seq_(seq), limits_(limits)
{
}

AnswerParser::Status AnswerParser::fail(std::string why)
{
    ranges_.clear();
    ranges_.shrink_to_fit();
    pages_ = 0;
    error_ = std::move(why);
    status_ = Status::invalid;
    return status_;
}

AnswerParser::Status AnswerParser::feed(std::span<const std::uint8_t> in)
{
    if (status_ != Status::more)
        return status_;
    AnswerHeader h;
    std::string why;
    if (!decode_answer_header(in, in.size(), h, why))
        return fail("batch " + num(batch_) + ": " + why);
    if (h.seq != seq_)
        return fail("batch " + num(batch_) + ": answer to request " + num(h.seq) + ", not to " + num(seq_));
    if (h.batch != batch_)
        return fail("answer carries batch " + num(h.batch) + " where batch " + num(batch_) + " was asked for");
    if (h.type == AnswerType::refused) {
        reason_ = h.reason;
        status_ = Status::refused;
        return status_;
    }
    if (batch_ == 0) {
        if (h.total_ranges > limits_.max_ranges || h.total_ranges > nr_pages_)
            return fail("the agent announces " + num(h.total_ranges) + " ranges (at most " +
                        num(std::min<std::uint64_t>(limits_.max_ranges, nr_pages_)) + " allowed)");
        if (h.total_pages > nr_pages_)
            return fail("the agent announces " + num(h.total_pages) + " free pages in a guest of " +
                        num(nr_pages_));
        declared_ranges_ = h.total_ranges;
        declared_pages_ = h.total_pages;
        scan_ns_ = h.scan_ns;
        // Bounded by the check above: at most max_ranges entries.
        ranges_.reserve(std::size_t(declared_ranges_));
    } else if (h.total_ranges != declared_ranges_ || h.total_pages != declared_pages_) {
        return fail("batch " + num(batch_) + ": the totals changed from " + num(declared_ranges_) + " ranges / " +
                    num(declared_pages_) + " pages to " + num(h.total_ranges) + " / " + num(h.total_pages));
    }
    if (h.count > declared_ranges_ - ranges_.size())
        return fail("batch " + num(batch_) + " brings " + num(h.count) + " ranges past the " +
                    num(declared_ranges_) + " announced");
    // A batch that is neither last nor brings a range would let an agent
    // make dom0 ask forever: each must make progress.
    if (h.count == 0 && !h.last())
        return fail("batch " + num(batch_) + " is empty and not the last");
    const std::size_t need = kAnswerHeaderSize + kRangeSize * std::size_t(h.count);
    if (in.size() < need)
        return fail("batch " + num(batch_) + " is truncated: " + num(in.size()) + " bytes for " + num(h.count) +
                    " ranges");
    const std::uint8_t* p = in.data() + kAnswerHeaderSize;
    for (std::uint32_t i = 0; i < h.count; ++i, p += kRangeSize) {
        Range r{load<std::uint64_t>(p), load<std::uint64_t>(p + 8)};
        const std::string where = "batch " + num(batch_) + ", range " + num(i) + " (pfn " + num(r.first) + ", " +
                                  num(r.count) + " pages): ";
        if (r.count == 0)
            return fail(where + "empty");
        if (r.first >= nr_pages_ || r.count > nr_pages_ - r.first)
            return fail(where + "goes past the guest's " + num(nr_pages_) + " pages");
        if (!ranges_.empty() && r.first < ranges_.back().end())
            return fail(where + "overlaps or precedes the range ending at pfn " + num(ranges_.back().end()));
        ranges_.push_back(r);
        pages_ += r.count;
    }
    if (pages_ > declared_pages_)
        return fail("batch " + num(batch_) + ": " + num(pages_) + " pages so far, more than the " +
                    num(declared_pages_) + " announced");
    ++batch_;
    if (!h.last()) {
        if (batch_ >= limits_.max_batches)
            return fail("more than " + num(limits_.max_batches) + " batches");
        return status_;
    }
    if (ranges_.size() != declared_ranges_ || pages_ != declared_pages_)
        return fail("the last batch ends with " + num(ranges_.size()) + " ranges / " + num(pages_) +
                    " pages where " + num(declared_ranges_) + " / " + num(declared_pages_) + " were announced");
    status_ = Status::complete;
    return status_;
}

} // namespace fastmig::ipc::hints
