// Record framing, the control records' bodies and RecordReader (stream
// format version 2; see docs/stream-format.md for the rules this file
// enforces; every check below corresponds to a sentence there).  PAGE_BATCH
// bodies are in wire_batch.cpp, the CRC routines in checksum.cpp.
#include "stream/wire.hpp"
#include "stream/wire_internal.hpp"
#include "stream/wire_outcome.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace fastmig::wire {

using bytes::append_le;
using bytes::load_le;
using bytes::store_le;
using namespace detail;

namespace {

constexpr std::size_t kHeaderFixed = 32;
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

} // namespace fastmig::wire
