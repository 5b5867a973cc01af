// Stream format v1: see docs/stream-format.md for the rules this file
// enforces; every check below corresponds to a sentence there.
#include "stream/wire.hpp"
#include "stream/bytes.hpp"
#include "stream/wire_outcome.hpp"

#include <algorithm>
#include <bit>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <isa-l/crc.h>
#include <isa-l/crc64.h>

namespace fastmig::wire {

using bytes::append_le;
using bytes::load_le;
using bytes::store_le;

namespace {

constexpr std::size_t pad_of(std::size_t len) { return (8 - len % 8) % 8; }

// Source of padding bytes for writev: padding is never longer than 7 bytes.
constexpr std::uint8_t kZeros[8] = {};

constexpr unsigned kPfnBits = 40;
constexpr unsigned kEncodingShift = 40;
constexpr unsigned kLengthShift = 44;
constexpr std::uint64_t kPfnMask = (std::uint64_t{1} << kPfnBits) - 1;
constexpr std::uint64_t kLengthLimit = std::uint64_t{1} << (64 - kLengthShift);
static_assert(kMaxPages - 1 <= kPfnMask, "every legal pfn must fit the descriptor");
static_assert(kPageSize + 64 < kLengthLimit, "every legal page length must fit the descriptor");

// kMaxEncodedPage (wire.hpp): a compressed page may legally be a little
// larger than the page itself (a deflate stored block, an XBZRLE delta of a
// scattered change); the slack is what kMaxRecordBody was sized for.
static_assert(kMaxGroupPages * std::uint64_t{kMaxEncodedPage} < kLengthLimit,
              "the blob of a full deflate group must fit the descriptor");

constexpr std::size_t kHeaderFixed = 32;
constexpr std::size_t kBatchFixed = 16;
constexpr std::size_t kRoundEndSize = 16;
constexpr std::size_t kStateFixed = 8;
constexpr std::size_t kAcceptFixed = 8;
constexpr std::size_t kDoneFixed = 40;
constexpr std::size_t kReadySize = 24;
constexpr std::size_t kAuthHelloSize = 40;
constexpr std::size_t kAuthChallengeSize = 72;
constexpr std::size_t kAuthProofSize = 32;

constexpr std::uint32_t kNoSuchType = 0xffffffffu;

// Largest body a record of this type may have; kNoSuchType for a type that
// does not exist.  The reader consults it before it grows its buffer, so a
// lying length field is refused at the cost of 16 bytes.
std::uint32_t max_body_length(std::uint32_t type)
{
    switch (static_cast<RecordType>(type)) {
    case RecordType::end: return 0;
    case RecordType::header: return kHeaderFixed + kMaxNameLength;
    case RecordType::page_batch: return kMaxRecordBody;
    case RecordType::round_end: return kRoundEndSize;
    case RecordType::round_ack: return kRoundEndSize;
    case RecordType::channels: return 16;
    case RecordType::channel_hello: return 16;
    case RecordType::platform_state:
    case RecordType::early_state: return kStateFixed + kMaxStateBlob;
    case RecordType::accept: return kAcceptFixed + kMaxMessageLength;
    case RecordType::done: return kDoneFixed + kMaxMessageLength;
    case RecordType::ready: return kReadySize;
    case RecordType::commit: return 0;
    case RecordType::auth_hello: return kAuthHelloSize;
    case RecordType::auth_challenge: return kAuthChallengeSize;
    case RecordType::auth_proof: return kAuthProofSize;
    case RecordType::migration_id:
    case RecordType::outcome_query: return kMigrationIdSize;
    case RecordType::outcome: return kOutcomeFixed + kMaxMessageLength;
    case RecordType::done_ack: return 0;
    }
    return kNoSuchType;
}

std::string hex(std::uint64_t v)
{
    char b[24];
    std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
    return b;
}

std::string str(std::uint64_t v) { return std::to_string(v); }

[[noreturn]] void fail(const char* record, const std::string& what)
{
    throw StreamError(std::string(record) + ": " + what);
}

// The record CRC: header with its crc field zeroed, then the body; the
// un-complemented running value is what crc32_iscsi chains on, the stored
// value is its complement (standard CRC-32C, see the format document).
std::uint32_t header_crc_start(const std::uint8_t* header)
{
    std::uint8_t h[kRecordHeaderSize];
    std::memcpy(h, header, sizeof h);
    store_le<std::uint32_t>(h + 8, 0);
    return crc32c({h, sizeof h});
}

void fill_record_header(std::uint8_t* h, RecordType type, std::uint32_t length)
{
    store_le<std::uint32_t>(h, static_cast<std::uint32_t>(type));
    store_le<std::uint32_t>(h + 4, length);
    store_le<std::uint32_t>(h + 8, 0);
    store_le<std::uint32_t>(h + 12, 0);
}

void check_message(const char* record, std::span<const std::uint8_t> body, std::size_t fixed,
                   std::string& out)
{
    const std::uint32_t len = load_le<std::uint32_t>(body.data() + 4);
    if (len > kMaxMessageLength)
        fail(record, "message_length " + str(len) + " exceeds " + str(kMaxMessageLength));
    if (body.size() != fixed + len)
        fail(record, "body is " + str(body.size()) + " bytes, expected " + str(fixed) +
                         " + message_length " + str(len));
    out.assign(reinterpret_cast<const char*>(body.data() + fixed), len);
}

std::string clip_message(const std::string& m)
{
    // Messages are explanations for a human; cutting a long one is better
    // than failing the migration over it.
    return m.substr(0, kMaxMessageLength);
}

} // namespace

const char* record_type_name(std::uint32_t type)
{
    switch (static_cast<RecordType>(type)) {
    case RecordType::end: return "end";
    case RecordType::header: return "header";
    case RecordType::page_batch: return "page_batch";
    case RecordType::round_end: return "round_end";
    case RecordType::round_ack: return "round_ack";
    case RecordType::channels: return "channels";
    case RecordType::channel_hello: return "channel_hello";
    case RecordType::platform_state: return "platform_state";
    case RecordType::early_state: return "early_state";
    case RecordType::accept: return "accept";
    case RecordType::done: return "done";
    case RecordType::ready: return "ready";
    case RecordType::commit: return "commit";
    case RecordType::auth_hello: return "auth_hello";
    case RecordType::auth_challenge: return "auth_challenge";
    case RecordType::auth_proof: return "auth_proof";
    case RecordType::migration_id: return "migration_id";
    case RecordType::outcome_query: return "outcome_query";
    case RecordType::outcome: return "outcome";
    case RecordType::done_ack: return "done_ack";
    }
    return "unknown";
}

// ---- encoding -------------------------------------------------------------

std::vector<std::uint8_t> encode_record(RecordType type, std::span<const std::uint8_t> body)
{
    const std::uint32_t limit = max_body_length(static_cast<std::uint32_t>(type));
    // Refusing here, on the sending side, turns a bug into a local error
    // instead of a "malformed stream" reported by the peer.
    if (limit == kNoSuchType)
        throw Error("encode_record: unknown record type " + str(static_cast<std::uint32_t>(type)));
    if (body.size() > limit)
        throw Error(std::string("encode_record: ") + record_type_name(static_cast<std::uint32_t>(type)) +
                    " body of " + str(body.size()) + " bytes exceeds the limit " + str(limit));
    const auto len = static_cast<std::uint32_t>(body.size());
    std::vector<std::uint8_t> out(kRecordHeaderSize + len + pad_of(len), 0);
    fill_record_header(out.data(), type, len);
    if (len)
        std::memcpy(out.data() + kRecordHeaderSize, body.data(), len);
    std::uint32_t crc = crc32c(body, crc32c({out.data(), kRecordHeaderSize}));
    store_le<std::uint32_t>(out.data() + 8, ~crc);
    return out;
}

std::vector<std::uint8_t> encode_header(const StreamHeader& h)
{
    // The name only labels logs at the destination; a longer one is cut
    // rather than making the migration fail.
    const std::size_t name_len = std::min<std::size_t>(h.domain_name.size(), kMaxNameLength);
    std::vector<std::uint8_t> b;
    b.reserve(kHeaderFixed + name_len);
    append_le<std::uint32_t>(b, h.version);
    append_le<std::uint32_t>(b, h.page_shift);
    append_le<std::uint64_t>(b, h.nr_pages);
    append_le<std::uint64_t>(b, h.features);
    append_le<std::uint32_t>(b, h.domain_kind);
    append_le<std::uint32_t>(b, static_cast<std::uint32_t>(name_len));
    b.insert(b.end(), h.domain_name.begin(), h.domain_name.begin() + name_len);
    return encode_record(RecordType::header, b);
}

namespace {
// ROUND_END and ROUND_ACK share one body layout.
std::vector<std::uint8_t> encode_round(RecordType type, const RoundEnd& r)
{
    std::vector<std::uint8_t> b;
    b.reserve(kRoundEndSize);
    append_le<std::uint32_t>(b, r.round);
    append_le<std::uint32_t>(b, 0);
    append_le<std::uint64_t>(b, r.pages);
    return encode_record(type, b);
}

RoundEnd parse_round(const char* what, std::span<const std::uint8_t> body)
{
    if (body.size() != kRoundEndSize)
        fail(what, "body is " + str(body.size()) + " bytes, must be " + str(kRoundEndSize));
    const std::uint32_t reserved = load_le<std::uint32_t>(body.data() + 4);
    if (reserved != 0)
        fail(what, "reserved field is " + hex(reserved) + ", must be 0");
    return {load_le<std::uint32_t>(body.data()), load_le<std::uint64_t>(body.data() + 8)};
}
} // namespace

std::vector<std::uint8_t> encode_round_end(const RoundEnd& r) { return encode_round(RecordType::round_end, r); }
std::vector<std::uint8_t> encode_round_ack(const RoundEnd& r) { return encode_round(RecordType::round_ack, r); }

namespace {
std::vector<std::uint8_t> encode_state(RecordType type, std::uint32_t state_type, std::span<const std::uint8_t> blob)
{
    if (blob.size() > kMaxStateBlob)
        throw Error(std::string(record_type_name(std::uint32_t(type))) + " blob of type " + str(state_type) + " is " +
                    str(blob.size()) + " bytes, above the stream limit of " + str(kMaxStateBlob));
    std::vector<std::uint8_t> b;
    b.reserve(kStateFixed + blob.size());
    append_le<std::uint32_t>(b, state_type);
    append_le<std::uint32_t>(b, 0);
    b.insert(b.end(), blob.begin(), blob.end());
    return encode_record(type, b);
}

PlatformState parse_state(const char* what, std::span<const std::uint8_t> body)
{
    if (body.size() < kStateFixed)
        fail(what, "body of " + str(body.size()) + " bytes is shorter than " + str(kStateFixed));
    if (body.size() > kStateFixed + kMaxStateBlob)
        fail(what, "blob of " + str(body.size() - kStateFixed) + " bytes exceeds " + str(kMaxStateBlob));
    const std::uint32_t reserved = load_le<std::uint32_t>(body.data() + 4);
    if (reserved != 0)
        fail(what, "reserved field is " + hex(reserved) + ", must be 0");
    return {load_le<std::uint32_t>(body.data()), body.subspan(kStateFixed)};
}
} // namespace

std::vector<std::uint8_t> encode_platform_state(std::uint32_t state_type, std::span<const std::uint8_t> blob)
{
    return encode_state(RecordType::platform_state, state_type, blob);
}

std::vector<std::uint8_t> encode_early_state(std::uint32_t state_type, std::span<const std::uint8_t> blob)
{
    return encode_state(RecordType::early_state, state_type, blob);
}

std::vector<std::uint8_t> encode_accept(const Accept& a)
{
    const std::string m = clip_message(a.message);
    std::vector<std::uint8_t> b;
    b.reserve(kAcceptFixed + m.size());
    append_le<std::uint32_t>(b, a.status);
    append_le<std::uint32_t>(b, static_cast<std::uint32_t>(m.size()));
    b.insert(b.end(), m.begin(), m.end());
    return encode_record(RecordType::accept, b);
}

std::vector<std::uint8_t> encode_done(const Done& d)
{
    const std::string m = clip_message(d.message);
    std::vector<std::uint8_t> b;
    b.reserve(kDoneFixed + m.size());
    append_le<std::uint32_t>(b, d.status);
    append_le<std::uint32_t>(b, static_cast<std::uint32_t>(m.size()));
    append_le<std::uint64_t>(b, d.resumed_at_ns);
    append_le<std::uint64_t>(b, d.pages_written);
    append_le<std::uint64_t>(b, d.bytes_received);
    append_le<std::uint64_t>(b, d.verify_digest);
    b.insert(b.end(), m.begin(), m.end());
    return encode_record(RecordType::done, b);
}

std::vector<std::uint8_t> encode_end() { return encode_record(RecordType::end, {}); }

std::vector<std::uint8_t> encode_ready(const Ready& r)
{
    std::vector<std::uint8_t> b;
    b.reserve(kReadySize);
    append_le<std::uint64_t>(b, r.pages_written);
    append_le<std::uint64_t>(b, r.bytes_received);
    append_le<std::uint64_t>(b, r.verify_digest);
    return encode_record(RecordType::ready, b);
}

std::vector<std::uint8_t> encode_commit() { return encode_record(RecordType::commit, {}); }

// ---- BatchEncoder -----------------------------------------------------------

BatchEncoder::BatchEncoder()
{
    // Sized once for a full batch so that the hot path never reallocates.
    descs_.reserve(kMaxBatchPages);
    data_.reserve(kMaxBatchPages);
    head_.reserve(kRecordHeaderSize + kBatchFixed + kMaxBatchPages * 8);
    iov_.reserve(kMaxBatchPages + 2);
}

void BatchEncoder::begin(std::uint32_t round)
{
    round_ = round;
    descs_.clear();
    data_.clear();
    iov_.clear();
    data_bytes_ = 0;
    wire_size_ = 0;
}

void BatchEncoder::add(Pfn pfn, PageEncoding enc, std::span<const std::uint8_t> data)
{
    // These are bugs in the caller, not stream errors: a batch this encoder
    // produced must always pass parse_page_batch.
    if (full())
        throw Error("page batch already holds " + str(kMaxBatchPages) + " pages");
    if (pfn > kPfnMask)
        throw Error("pfn " + str(pfn) + " does not fit a page descriptor");
    const std::size_t len = data.size();
    bool ok = false;
    switch (enc) {
    case PageEncoding::zero:
    case PageEncoding::free: ok = len == 0; break;
    case PageEncoding::raw: ok = len == kPageSize; break;
    case PageEncoding::deflate: // a group of one page; continuations only come from add_group
    case PageEncoding::xbzrle: ok = len >= 1 && len <= kMaxEncodedPage; break;
    case PageEncoding::zero_run:
    case PageEncoding::free_run: ok = false; break; // add_run
    }
    if (!ok)
        throw Error("page encoding " + str(static_cast<unsigned>(enc)) + " cannot carry " + str(len) +
                    " bytes (pfn " + str(pfn) + ")");
    descs_.push_back(pfn | std::uint64_t{static_cast<std::uint8_t>(enc)} << kEncodingShift |
                     std::uint64_t{len} << kLengthShift);
    if (len) {
        // writev takes non-const pointers but only reads through them.
        data_.push_back({const_cast<std::uint8_t*>(data.data()), len});
        data_bytes_ += len;
    }
}

void BatchEncoder::add_run(Pfn first, std::uint32_t n, PageEncoding kind)
{
    if (kind != PageEncoding::zero && kind != PageEncoding::free)
        throw Error("a page run is of zero or free pages, not encoding " + str(static_cast<unsigned>(kind)));
    if (n == 1)
        return add(first, kind, {});
    if (full())
        throw Error("page batch already holds " + str(kMaxBatchPages) + " pages");
    if (n == 0 || n > kMaxRun || first > kPfnMask || first + n - 1 > kPfnMask ||
        (first >> kChannelRegionShift) != ((first + n - 1) >> kChannelRegionShift))
        throw Error("a run of " + str(n) + " pages from pfn " + str(first) +
                    " is empty, too long or crosses a channel region");
    const auto enc = kind == PageEncoding::zero ? PageEncoding::zero_run : PageEncoding::free_run;
    descs_.push_back(first | std::uint64_t{static_cast<std::uint8_t>(enc)} << kEncodingShift |
                     std::uint64_t{n} << kLengthShift);
}

void BatchEncoder::add_group(std::span<const Pfn> pfns, std::span<const std::uint8_t> blob)
{
    // All checks before the first descriptor goes in, so a refused group
    // leaves the batch as it was.
    const std::size_t n = pfns.size();
    if (n < 1 || n > kMaxGroupPages)
        throw Error("a deflate group has " + str(n) + " pages, must be 1.." + str(kMaxGroupPages));
    if (n > room())
        throw Error("a deflate group of " + str(n) + " pages does not fit the batch (room for " + str(room()) +
                    ")");
    if (blob.empty() || blob.size() > n * kMaxEncodedPage)
        throw Error("a deflate group of " + str(n) + " pages cannot carry " + str(blob.size()) +
                    " bytes (1.." + str(n * kMaxEncodedPage) + ")");
    for (Pfn pfn : pfns)
        if (pfn > kPfnMask)
            throw Error("pfn " + str(pfn) + " does not fit a page descriptor");
    constexpr std::uint64_t enc = std::uint64_t{static_cast<std::uint8_t>(PageEncoding::deflate)} << kEncodingShift;
    descs_.push_back(pfns[0] | enc | std::uint64_t{blob.size()} << kLengthShift);
    for (std::size_t i = 1; i < n; ++i)
        descs_.push_back(pfns[i] | enc);
    data_.push_back({const_cast<std::uint8_t*>(blob.data()), blob.size()});
    data_bytes_ += blob.size();
}

std::span<const iovec> BatchEncoder::finish()
{
    if (descs_.empty())
        throw Error("an empty page batch cannot be encoded (count must be >= 1)");
    const std::size_t count = descs_.size();
    const std::size_t body = kBatchFixed + count * 8 + data_bytes_;
    // count <= kMaxBatchPages and every page <= kMaxEncodedPage keep this true.
    if (body > kMaxRecordBody)
        throw Error("page batch body of " + str(body) + " bytes exceeds " + str(kMaxRecordBody));

    head_.resize(kRecordHeaderSize + kBatchFixed + count * 8);
    std::uint8_t* h = head_.data();
    fill_record_header(h, RecordType::page_batch, static_cast<std::uint32_t>(body));
    store_le<std::uint32_t>(h + 16, round_);
    store_le<std::uint32_t>(h + 20, static_cast<std::uint32_t>(count));
    store_le<std::uint64_t>(h + 24, 0);
    for (std::size_t i = 0; i < count; ++i)
        store_le<std::uint64_t>(h + 32 + i * 8, descs_[i]);

    // The CRC follows the wire order: head (crc field still zero), then each
    // page's data where it lies, so no page is copied to checksum it.
    std::uint32_t crc = crc32c(head_);
    for (const iovec& v : data_)
        crc = crc32c({static_cast<const std::uint8_t*>(v.iov_base), v.iov_len}, crc);
    store_le<std::uint32_t>(h + 8, ~crc);

    iov_.clear();
    iov_.push_back({head_.data(), head_.size()});
    iov_.insert(iov_.end(), data_.begin(), data_.end());
    const std::size_t pad = pad_of(body);
    if (pad)
        iov_.push_back({const_cast<std::uint8_t*>(kZeros), pad});
    wire_size_ = kRecordHeaderSize + body + pad;
    return iov_;
}

// ---- decoding -------------------------------------------------------------

void MemorySource::read_exact(std::span<std::uint8_t> buf)
{
    if (buf.size() > remaining())
        throw StreamError("stream truncated: needed " + str(buf.size()) + " bytes at offset " + str(pos_) +
                          ", only " + str(remaining()) + " left");
    if (!buf.empty())
        std::memcpy(buf.data(), data_.data() + pos_, buf.size());
    pos_ += buf.size();
}

void read_magic(ByteSource& src, const std::array<std::uint8_t, 8>& expected)
{
    std::array<std::uint8_t, 8> got;
    src.read_exact(got);
    if (got == expected)
        return;
    std::string shown;
    for (auto c : got) {
        char b[4];
        std::snprintf(b, sizeof b, "%02x", c);
        if (!shown.empty())
            shown += ' ';
        shown += b;
    }
    // Name the likely culprits: they are what an operator gets wrong.
    std::string hint;
    const auto& other = expected == kSourceMagic ? kReplyMagic : kSourceMagic;
    if (got == other)
        hint = " (the peer is fastmig, but the other end of the connection: both sides sending or both receiving?)";
    else if (std::all_of(got.begin(), got.end(), [](std::uint8_t c) { return c == 0xff; }))
        hint = " (looks like a libxc/Xen migration stream)";
    throw StreamError("bad magic: got " + shown + ", expected fastmig " +
                      (expected == kSourceMagic ? "source" : "destination") + " magic" + hint);
}

Record RecordReader::read()
{
    std::uint8_t h[kRecordHeaderSize];
    src_.read_exact({h, sizeof h});
    const std::uint32_t type = load_le<std::uint32_t>(h);
    const std::uint32_t length = load_le<std::uint32_t>(h + 4);
    const std::uint32_t crc = load_le<std::uint32_t>(h + 8);
    const std::uint32_t reserved = load_le<std::uint32_t>(h + 12);

    const std::uint32_t limit = max_body_length(type);
    if (limit == kNoSuchType)
        throw StreamError("unknown record type " + str(type));
    const char* name = record_type_name(type);
    if (reserved != 0)
        fail(name, "reserved field of the record header is " + hex(reserved) + ", must be 0");
    if (length > limit)
        fail(name, "record length " + str(length) + " exceeds the limit of " + str(limit) + " for this type");

    // Body and padding in one read; the buffer only ever grows to the
    // largest per-type limit (plus 7), whatever the stream claims.
    // On an authenticated connection the tag follows, in the same read.
    const std::size_t padded = std::size_t{length} + pad_of(length);
    const std::size_t tag = verifier_ ? verifier_->tag_size() : 0;
    if (buf_.size() < padded + tag)
        buf_.resize(padded + tag);
    try {
        src_.read_exact({buf_.data(), padded + tag});
    } catch (const StreamError& e) {
        if (e.has_context())
            throw;
        fail(name, "record of " + str(length) + " bytes: " + e.cause());
    }
    std::span<const std::uint8_t> body(buf_.data(), length);
    // The tag first: an altered record is an authentication failure, not
    // a CRC error, and nothing in it is looked at before it is trusted.
    if (verifier_)
        verifier_->verify(name, {h, sizeof h}, {buf_.data(), padded}, {buf_.data() + padded, tag});

    if (verifier_ && verifier_->replaces_crc()) {
        if (crc != 0)
            fail(name, "crc field is " + hex(crc) + " on an encrypted connection, must be 0");
    } else {
        const std::uint32_t want = ~crc32c(body, header_crc_start(h));
        if (crc != want)
            fail(name, "CRC mismatch: record says " + hex(crc) + ", computed " + hex(want));
    }
    for (std::size_t i = length; i < padded; ++i)
        if (buf_[i] != 0)
            fail(name, "padding byte " + str(i - length) + " is " + hex(buf_[i]) + ", must be 0");

    bytes_read_ += kRecordHeaderSize + padded + tag;
    return {static_cast<RecordType>(type), body};
}

StreamHeader parse_header(std::span<const std::uint8_t> body)
{
    // The version first, so that a future layout is reported as such.
    if (body.size() < 4)
        fail("header", "body of " + str(body.size()) + " bytes is too short to hold a version");
    StreamHeader h;
    h.version = load_le<std::uint32_t>(body.data());
    if (!readable_version(h.version))
        fail("header", "version " + str(h.version) + " is not supported (this reader knows version " +
                           readable_versions() + ")");
    if (body.size() < kHeaderFixed)
        fail("header", "body of " + str(body.size()) + " bytes is shorter than " + str(kHeaderFixed));
    const std::uint8_t* p = body.data();
    h.page_shift = load_le<std::uint32_t>(p + 4);
    h.nr_pages = load_le<std::uint64_t>(p + 8);
    h.features = load_le<std::uint64_t>(p + 16);
    h.domain_kind = load_le<std::uint32_t>(p + 24);
    const std::uint32_t name_len = load_le<std::uint32_t>(p + 28);
    if (h.page_shift != kPageShift)
        fail("header", "page_shift " + str(h.page_shift) + " is not supported (must be " + str(kPageShift) + ")");
    if (h.nr_pages == 0)
        fail("header", "nr_pages is 0");
    if (h.nr_pages > kMaxPages)
        fail("header", "nr_pages " + str(h.nr_pages) + " exceeds the maximum " + str(kMaxPages));
    if (name_len > kMaxNameLength)
        fail("header", "name_length " + str(name_len) + " exceeds " + str(kMaxNameLength));
    if (body.size() != kHeaderFixed + name_len)
        fail("header", "body is " + str(body.size()) + " bytes, expected " + str(kHeaderFixed) +
                           " + name_length " + str(name_len));
    h.domain_name.assign(reinterpret_cast<const char*>(p + kHeaderFixed), name_len);
    return h;
}

RoundEnd parse_round_end(std::span<const std::uint8_t> body) { return parse_round("round_end", body); }
RoundEnd parse_round_ack(std::span<const std::uint8_t> body) { return parse_round("round_ack", body); }

Accept parse_accept(std::span<const std::uint8_t> body)
{
    if (body.size() < kAcceptFixed)
        fail("accept", "body of " + str(body.size()) + " bytes is shorter than " + str(kAcceptFixed));
    Accept a;
    a.status = load_le<std::uint32_t>(body.data());
    check_message("accept", body, kAcceptFixed, a.message);
    return a;
}

Done parse_done(std::span<const std::uint8_t> body)
{
    if (body.size() < kDoneFixed)
        fail("done", "body of " + str(body.size()) + " bytes is shorter than " + str(kDoneFixed));
    const std::uint8_t* p = body.data();
    Done d;
    d.status = load_le<std::uint32_t>(p);
    d.resumed_at_ns = load_le<std::uint64_t>(p + 8);
    d.pages_written = load_le<std::uint64_t>(p + 16);
    d.bytes_received = load_le<std::uint64_t>(p + 24);
    d.verify_digest = load_le<std::uint64_t>(p + 32);
    check_message("done", body, kDoneFixed, d.message);
    return d;
}

void parse_end(std::span<const std::uint8_t> body)
{
    if (!body.empty())
        fail("end", "body is " + str(body.size()) + " bytes, must be empty");
}

Ready parse_ready(std::span<const std::uint8_t> body)
{
    if (body.size() != kReadySize)
        fail("ready", "body is " + str(body.size()) + " bytes, must be " + str(kReadySize));
    Ready r;
    r.pages_written = load_le<std::uint64_t>(body.data());
    r.bytes_received = load_le<std::uint64_t>(body.data() + 8);
    r.verify_digest = load_le<std::uint64_t>(body.data() + 16);
    return r;
}

void parse_commit(std::span<const std::uint8_t> body)
{
    if (!body.empty())
        fail("commit", "body is " + str(body.size()) + " bytes, must be empty");
}

PlatformState parse_platform_state(std::span<const std::uint8_t> body) { return parse_state("platform_state", body); }

PlatformState parse_early_state(std::span<const std::uint8_t> body) { return parse_state("early_state", body); }

void parse_page_batch(std::span<const std::uint8_t> body, std::uint64_t nr_pages, PageBatch& out)
{
    out.page_count = 0;
    out.pages.clear();
    out.data.clear();
    out.group_pages.clear();
    if (body.size() < kBatchFixed)
        fail("page_batch", "body of " + str(body.size()) + " bytes is shorter than " + str(kBatchFixed));
    const std::uint8_t* p = body.data();
    out.round = load_le<std::uint32_t>(p);
    const std::uint32_t count = load_le<std::uint32_t>(p + 4);
    const std::uint64_t reserved = load_le<std::uint64_t>(p + 8);
    if (reserved != 0)
        fail("page_batch", "reserved field is " + hex(reserved) + ", must be 0");
    if (count == 0)
        fail("page_batch", "count is 0, must be at least 1");
    if (count > kMaxBatchPages)
        fail("page_batch", "count " + str(count) + " exceeds " + str(kMaxBatchPages));
    const std::size_t desc_end = kBatchFixed + std::size_t{count} * 8;
    if (body.size() < desc_end)
        fail("page_batch", str(count) + " descriptors need " + str(desc_end) + " bytes, body has " +
                               str(body.size()));

    // The open deflate group, if any: index of its start descriptor.  A group
    // is closed (and its blob length judged against its page count) when a
    // descriptor that is not a continuation arrives, or at the end.
    constexpr std::size_t kNoGroup = SIZE_MAX;
    std::size_t group = kNoGroup;
    auto close_group = [&] {
        if (group == kNoGroup)
            return;
        const std::size_t n = out.group_pages[group];
        const std::uint32_t blob = out.pages[group].length;
        if (blob > n * std::size_t{kMaxEncodedPage})
            fail("page_batch", "descriptor " + str(group) + " (pfn " + str(out.pages[group].pfn) +
                                   "): deflate group of " + str(n) + " pages has a blob of " + str(blob) +
                                   " bytes, more than " + str(n * std::size_t{kMaxEncodedPage}));
        group = kNoGroup;
    };

    std::size_t off = desc_end;
    for (std::uint32_t i = 0; i < count; ++i) {
        const std::uint64_t d = load_le<std::uint64_t>(p + kBatchFixed + std::size_t{i} * 8);
        const Pfn pfn = d & kPfnMask;
        const unsigned enc = static_cast<unsigned>(d >> kEncodingShift) & 0xf;
        const std::uint64_t len = d >> kLengthShift;
        auto where = [&] { return "descriptor " + str(i) + " (pfn " + str(pfn) + "): "; };
        if (pfn >= nr_pages)
            fail("page_batch", "descriptor " + str(i) + ": pfn " + str(pfn) + " >= nr_pages " + str(nr_pages));
        const char* rule = nullptr;
        switch (static_cast<PageEncoding>(enc)) {
        case PageEncoding::zero:
            if (len != 0)
                rule = "zero page must have length 0";
            break;
        case PageEncoding::free:
            if (len != 0)
                rule = "free page must have length 0";
            break;
        case PageEncoding::raw:
            if (len != kPageSize)
                rule = "raw page must have length 4096";
            break;
        case PageEncoding::xbzrle:
            if (len < 1 || len > kMaxEncodedPage)
                rule = "encoded page must have length 1..4160";
            break;
        case PageEncoding::deflate:
            // The exact bound (n pages' worth) is checked when the group closes.
            if (len > kMaxGroupPages * std::size_t{kMaxEncodedPage})
                rule = "deflate group blob must have length 1..66560";
            break;
        case PageEncoding::zero_run:
        case PageEncoding::free_run:
            // `length` is a page count here, not bytes of data.
            if (len < 2 || len > kMaxRun)
                rule = "a run must have 2..512 pages";
            else if (len > nr_pages - pfn)
                rule = "the run goes past nr_pages";
            else if ((pfn >> kChannelRegionShift) != ((pfn + len - 1) >> kChannelRegionShift))
                rule = "the run crosses a channel region (512 pages)";
            break;
        default:
            fail("page_batch", where() + "unknown encoding " + str(enc));
        }
        if (rule)
            fail("page_batch", where() + "length " + str(len) + ": " + rule);
        if (static_cast<PageEncoding>(enc) == PageEncoding::zero_run ||
            static_cast<PageEncoding>(enc) == PageEncoding::free_run) {
            close_group();
            out.pages.push_back({pfn, static_cast<PageEncoding>(enc), static_cast<std::uint32_t>(len)});
            out.data.push_back({});
            out.group_pages.push_back(1);
            out.page_count += len;
            continue;
        }
        if (len > body.size() - off)
            fail("page_batch", where() + "length " + str(len) + " runs past the end of the body (" +
                                   str(body.size() - off) + " bytes left)");
        std::uint8_t in_group = 1;
        if (static_cast<PageEncoding>(enc) == PageEncoding::deflate && len == 0) {
            if (group == kNoGroup)
                fail("page_batch", where() + "deflate continuation (length 0) without a group start before it");
            if (out.group_pages[group] >= kMaxGroupPages)
                fail("page_batch", where() + "deflate group starting at descriptor " + str(group) +
                                       " has more than " + str(kMaxGroupPages) + " pages");
            ++out.group_pages[group];
            in_group = 0;
        } else {
            close_group();
            if (static_cast<PageEncoding>(enc) == PageEncoding::deflate)
                group = i;
        }
        out.pages.push_back({pfn, static_cast<PageEncoding>(enc), static_cast<std::uint32_t>(len)});
        out.data.push_back(body.subspan(off, len));
        out.group_pages.push_back(in_group);
        ++out.page_count;
        off += len;
    }
    close_group();
    if (off != body.size())
        fail("page_batch", "lengths do not add up: " + str(body.size() - off) +
                               " bytes left over after the data of " + str(count) + " pages");
}

std::uint64_t encoding_feature(PageEncoding e)
{
    switch (e) {
    case PageEncoding::deflate: return kFeatureDeflate;
    case PageEncoding::xbzrle: return kFeatureXbzrle;
    case PageEncoding::zero_run:
    case PageEncoding::free_run: return kFeatureRuns;
    case PageEncoding::zero:
    case PageEncoding::raw:
    case PageEncoding::free: return 0;
    }
    return ~std::uint64_t{0}; // unknown encodings are never enabled
}

void check_batch_features(const PageBatch& batch, std::uint64_t features)
{
    for (std::size_t i = 0; i < batch.pages.size(); ++i) {
        const PageDesc& d = batch.pages[i];
        const std::uint64_t need = encoding_feature(d.encoding);
        if ((need & features) != need)
            fail("page_batch", "descriptor " + str(i) + " (pfn " + str(d.pfn) + "): encoding " +
                                   (d.encoding == PageEncoding::deflate  ? "DEFLATE" :
                                    d.encoding == PageEncoding::xbzrle   ? "XBZRLE" :
                                    d.encoding == PageEncoding::zero_run ? "ZERO_RUN" :
                                    d.encoding == PageEncoding::free_run ? "FREE_RUN" :
                                                                          str(static_cast<unsigned>(d.encoding))) +
                                   " was not negotiated (feature bits " + hex(features) + ")");
    }
}

// ---- checksums ------------------------------------------------------------

namespace {

// Two ISA-L implementations of the same CRC.  crc32_iscsi dispatches on
// CPUID to the SSE4.2 crc32 instruction (with PCLMULQDQ folding), the right
// choice on real hardware.  But CPUID can claim an instruction that is
// emulated: under QEMU's TCG (the nested-Xen harness, or any emulated host)
// crc32 runs one bit at a time in a C helper, and there the byte-table
// crc32_iscsi_base was measured faster (116-175 MiB/s against 84-138).  So
// time both once, on a small buffer, and keep the faster (as Linux picks its
// RAID6 and xor routines at boot).  FASTMIG_CRC32C=instruction|table forces one.
using CrcFn = unsigned int (*)(unsigned char*, int, unsigned int);

struct CrcImpl {
    CrcFn fn;
    std::string description;
};

double best_ns(CrcFn fn, std::vector<unsigned char>& buf)
{
    double best = 1e300;
    for (int i = 0; i < 3; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        volatile unsigned sink = fn(buf.data(), int(buf.size()), 0xffffffffu);
        (void)sink;
        best = std::min(best, std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
}

CrcImpl choose_crc()
{
    const char* env = std::getenv("FASTMIG_CRC32C");
    std::string force = env ? env : "";
    if (force == "instruction")
        return {crc32_iscsi, "ISA-L crc32_iscsi (forced by FASTMIG_CRC32C)"};
    if (force == "table")
        return {crc32_iscsi_base, "ISA-L crc32_iscsi_base (forced by FASTMIG_CRC32C)"};
    if (!force.empty() && force != "auto")
        throw Error("FASTMIG_CRC32C='" + force + "' is not auto, instruction or table");
    std::vector<unsigned char> buf(16 * 1024);
    for (std::size_t i = 0; i < buf.size(); ++i)
        buf[i] = static_cast<unsigned char>(i * 131 + 7);
    const double hw = best_ns(crc32_iscsi, buf), table = best_ns(crc32_iscsi_base, buf);
    char line[160];
    const double mib = double(buf.size()) / (1 << 20);
    std::snprintf(line, sizeof line, "%s (timed here: instruction %.0f MiB/s, table %.0f MiB/s)",
                  table < hw ? "ISA-L crc32_iscsi_base" : "ISA-L crc32_iscsi", mib / (hw * 1e-9),
                  mib / (table * 1e-9));
    return {table < hw ? crc32_iscsi_base : crc32_iscsi, line};
}

const CrcImpl& crc_impl()
{
    static const CrcImpl impl = choose_crc();
    return impl;
}

} // namespace

const std::string& crc32c_implementation() { return crc_impl().description; }

std::uint32_t crc32c(std::span<const std::uint8_t> data, std::uint32_t seed)
{
    // ISA-L takes an int length; feed it in pieces well below INT_MAX.
    constexpr std::size_t kChunk = std::size_t{1} << 30;
    const CrcFn fn = crc_impl().fn;
    std::uint32_t crc = seed;
    const std::uint8_t* p = data.data();
    for (std::size_t left = data.size(); left > 0;) {
        const std::size_t n = std::min(left, kChunk);
        crc = fn(const_cast<std::uint8_t*>(p), static_cast<int>(n), crc);
        p += n;
        left -= n;
    }
    return crc;
}

std::uint32_t crc32c_with(std::span<const std::uint8_t> data, bool table, std::uint32_t seed)
{
    return (table ? crc32_iscsi_base : crc32_iscsi)(const_cast<std::uint8_t*>(data.data()),
                                                   static_cast<int>(data.size()), seed);
}

std::uint64_t page_checksum(std::span<const std::uint8_t> page)
{
    return crc64_ecma_refl(0, page.data(), page.size());
}

std::uint64_t page_digest(std::span<const std::uint64_t> page_checksums)
{
    // crc64_ecma_refl chains: feeding the previous result as init continues
    // the same CRC, so the array can be converted in small pieces.
    if constexpr (std::endian::native == std::endian::little) {
        return crc64_ecma_refl(0, reinterpret_cast<const std::uint8_t*>(page_checksums.data()),
                               page_checksums.size() * sizeof(std::uint64_t));
    } else {
        std::uint64_t crc = 0;
        std::uint8_t buf[8 * 512];
        for (std::size_t i = 0; i < page_checksums.size();) {
            const std::size_t n = std::min<std::size_t>(512, page_checksums.size() - i);
            for (std::size_t j = 0; j < n; ++j)
                store_le<std::uint64_t>(buf + 8 * j, page_checksums[i + j]);
            crc = crc64_ecma_refl(crc, buf, 8 * n);
            i += n;
        }
        return crc;
    }
}

} // namespace fastmig::wire
