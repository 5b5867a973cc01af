// The fastmig stream format, version 2: encoders and validating decoders.
// The normative description is docs/stream-format.md; this header is its code.
//
// Layout (all integers little endian):
//   stream   := magic(8) record*            (source -> destination)
//   reply    := magic(8) record*            (destination -> source, same socket)
//   record   := type:u32 length:u32 crc:u32 reserved:u32  body[length]  pad
//               pad = zero bytes up to the next multiple of 8
//               crc = CRC32C (ISA-L crc32_iscsi, seed 0xffffffff) over the 16
//                     header bytes with crc set to 0, then the body (not pad),
//                     complemented at the end: the standard CRC-32C value
//
// Every decoder bounds-checks before it allocates or copies: a hostile or
// corrupt stream yields a StreamError naming the record and the field.
#pragma once

#include "stream/checksum.hpp"
#include "stream/types.hpp"

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <sys/uio.h>

namespace fastmig::wire {

constexpr std::uint32_t kVersion = 2;
// The oldest version a reader still receives: hosts of a pool are upgraded
// one at a time, so older fastmig sources stay in the field for a while
// (docs/stream-format.md, Versioning).  Streams recorded by every version
// in the range are kept in tests/data/streams/ and must stay readable.
constexpr std::uint32_t kOldestReadVersion = 2;
constexpr bool readable_version(std::uint32_t v)
{
    return v >= kOldestReadVersion && v <= kVersion;
}
// "2", or "2 to 3": for the refusal of any other version.
inline std::string readable_versions()
{
    return kOldestReadVersion == kVersion ? std::to_string(kVersion)
                                          : std::to_string(kOldestReadVersion) + " to " + std::to_string(kVersion);
}

// First 8 bytes of each direction, so a peer that is not fastmig is detected
// at once.  Source->destination "FMIG\r\nS\0", destination->source "FMIG\r\nD\0"
// (CR LF catches text-mode mangling, the letter says which direction).
constexpr std::array<std::uint8_t, 8> kSourceMagic = {'F', 'M', 'I', 'G', '\r', '\n', 'S', 0};
constexpr std::array<std::uint8_t, 8> kReplyMagic = {'F', 'M', 'I', 'G', '\r', '\n', 'D', 0};

constexpr std::size_t kRecordHeaderSize = 16;
// Limits.  A record body above kMaxRecordBody is refused before any buffer is
// grown, whatever the length field says.
constexpr std::uint32_t kMaxBatchPages = 1024;
// The most bytes one page may take in a PAGE_BATCH, whatever its encoding:
// an XBZRLE delta or a deflate group's average per page (see PageBatch).  A
// little more than the page: a deflate stored block, a delta of a scattered
// change.  The codecs send a page raw rather than exceed it
// (codec::kMaxXbzrle, codec::kMaxEncodedGroup are this bound).
constexpr std::uint32_t kMaxEncodedPage = kPageSize + 64;
// Pages in one deflate group (PageBatch); codec::kMaxGroupPages is this one.
constexpr std::uint32_t kMaxGroupPages = 16;
constexpr std::uint32_t kMaxRecordBody = 16 + kMaxBatchPages * 8 + kMaxBatchPages * kMaxEncodedPage;
constexpr std::uint32_t kMaxNameLength = 255;
constexpr std::uint32_t kMaxStateBlob = 4u << 20;
constexpr std::uint32_t kMaxMessageLength = 1024;

enum class RecordType : std::uint32_t {
    end = 0,            // S->D: no more records; body empty
    header = 1,         // S->D: first record: version, page size, size, features
    page_batch = 2,     // S->D: pages of one round
    round_end = 3,      // S->D: a precopy round is complete
    platform_state = 4, // S->D: one opaque backend state blob
    accept = 5,         // D->S: answer to the header: go on, or refused with a reason
    done = 6,           // D->S: domain built and running (or failed), with figures
    round_ack = 7,      // D->S: every page of a round is written into the domain
    channels = 8,       // S->D: after HEADER: how many connections carry the stream
    channel_hello = 9,  // S->D: first record of every extra connection
    ready = 10,         // D->S: domain built, paused, ready to run: the ACK that asks for COMMIT
    commit = 11,        // S->D: run it (the source will not); body empty
    auth_hello = 12,     // S->D: with a pre-shared key: suite, source nonce (docs: Authentication)
    auth_challenge = 13, // D->S: suite, destination nonce, destination's proof
    auth_proof = 14,     // S->D: source's proof
    early_state = 15,    // S->D: between precopy rounds: a backend blob the destination may prepare with
    // Feature OUTCOME (stream/wire_outcome.hpp; docs: Resolving a lost COMMIT)
    migration_id = 16,  // S->D: after HEADER (and CHANNELS): the id the destination records the outcome under
    outcome_query = 17, // S->D: first record of a connection that asks what became of a migration id
    outcome = 18,       // D->S: the answer: committed and started, not committed (copy destroyed), or unknown
    done_ack = 19,      // S->D: after DONE: the source has the outcome; nothing is left to ask
};
const char* record_type_name(std::uint32_t type);

// Per-page encodings in a page batch.  Values are stable wire numbers.
enum class PageEncoding : std::uint8_t {
    zero = 0,    // all-zero page; no data
    raw = 1,     // kPageSize bytes
    deflate = 2, // raw deflate of a group of 1..kMaxGroupPages pages (see PageBatch)
    xbzrle = 3,  // RLE delta against the copy of the page last sent (docs: XBZRLE)
    free = 4,    // page the guest declared free; destination makes it zero
    // With feature RUNS: `length` (2..kMaxRun) consecutive pages from pfn,
    // all in one channel region, that are zero / free.  No data.  A guest
    // with gigabytes of free or zero memory costs a descriptor per 2 MiB
    // instead of one per page.
    zero_run = 5,
    free_run = 6,
};
constexpr std::uint32_t kMaxRun = 512; // one channel region (2 MiB of pfns)

// A deflate group: one descriptor with encoding deflate and length > 0 starts
// it and carries the whole compressed blob, which inflates to n * kPageSize
// bytes; the n - 1 descriptors that follow it with encoding deflate and
// length 0 are its other pages, in blob order.  1 <= n <= kMaxGroupPages and
// the blob is 1 .. n * kMaxEncodedPage bytes, so the average per page stays
// within kMaxEncodedPage and kMaxRecordBody needs no change.

// Feature bits in the header.  A destination refuses a bit it does not know.
enum Feature : std::uint64_t {
    kFeatureVerify = 1u << 0,  // destination checksums every page and returns a digest in DONE
    kFeatureDeflate = 1u << 1, // DEFLATE pages and groups (any deflate compressor: igzip, zlib)
    kFeatureXbzrle = 1u << 2,  // XBZRLE pages
    kFeatureChannels = 1u << 3, // a CHANNELS record follows HEADER: pages travel on several connections
    kFeatureOneWay = 1u << 4,  // no reply direction: the destination sends nothing (libxl's save helper)
    kFeatureRuns = 1u << 5,     // ZERO_RUN and FREE_RUN descriptors
    kFeatureEarlyState = 1u << 6, // EARLY_STATE records after a ROUND_END (one channel only)
    kFeatureOutcome = 1u << 7,    // MIGRATION_ID after HEADER; the destination records the outcome (DONE_ACK ends it)
};
constexpr std::uint64_t kKnownFeatures = kFeatureVerify | kFeatureDeflate | kFeatureXbzrle | kFeatureChannels |
                                         kFeatureOneWay | kFeatureRuns | kFeatureEarlyState | kFeatureOutcome;

// The feature bit a page encoding needs before a receiver may accept it (0:
// always allowed; ZERO, RAW and FREE need no state or codec at either end).
std::uint64_t encoding_feature(PageEncoding e);

struct StreamHeader {
    std::uint32_t version = kVersion;
    std::uint32_t page_shift = kPageShift;
    std::uint64_t nr_pages = 0;
    std::uint64_t features = 0;
    std::uint32_t domain_kind = 0;
    std::string domain_name; // <= kMaxNameLength bytes, for logs only
};

// One page in a batch.  On the wire a descriptor is one u64:
//   bits 0..39 pfn, bits 40..43 encoding, bits 44..63 data length in bytes.
struct PageDesc {
    Pfn pfn = 0;
    PageEncoding encoding = PageEncoding::zero;
    std::uint32_t length = 0;
};

// Body of ROUND_END (S->D) and of ROUND_ACK (D->S), which share a layout.
struct RoundEnd {
    std::uint32_t round = 0;
    std::uint64_t pages = 0; // ROUND_END: pages sent in the round; ROUND_ACK: pages applied
};

struct Accept {
    std::uint32_t status = 0; // 0 = accepted, otherwise an AcceptStatus
    std::string message;      // <= kMaxMessageLength bytes
};
enum AcceptStatus : std::uint32_t {
    kAcceptOk = 0,
    kAcceptBadVersion = 1,
    kAcceptBadFeatures = 2,
    kAcceptNoMemory = 3,
    kAcceptBadKind = 4,
    kAcceptInternal = 5,
    kAcceptAuth = 6, // authentication required, impossible or failed (docs: Authentication)
};

// READY: the destination built the domain (every page, platform state
// restored) and holds it paused until COMMIT.
struct Ready {
    std::uint64_t pages_written = 0;
    std::uint64_t bytes_received = 0;
    std::uint64_t verify_digest = 0;  // with kFeatureVerify: see page_digest()
};

struct Done {
    std::uint32_t status = 0;         // 0 = running at destination
    std::uint64_t resumed_at_ns = 0;  // destination CLOCK_MONOTONIC at resume
    std::uint64_t pages_written = 0;
    std::uint64_t bytes_received = 0;
    std::uint64_t verify_digest = 0;  // with kFeatureVerify: see page_digest()
    std::string message;              // <= kMaxMessageLength bytes
};

// ---- encoding -------------------------------------------------------------

// A complete record (header, body, padding) for a small body.
std::vector<std::uint8_t> encode_record(RecordType type, std::span<const std::uint8_t> body);
std::vector<std::uint8_t> encode_header(const StreamHeader& h);
std::vector<std::uint8_t> encode_round_end(const RoundEnd& r);
std::vector<std::uint8_t> encode_round_ack(const RoundEnd& r);
std::vector<std::uint8_t> encode_platform_state(std::uint32_t state_type, std::span<const std::uint8_t> blob);
// EARLY_STATE: the same body as PLATFORM_STATE under another record type.
std::vector<std::uint8_t> encode_early_state(std::uint32_t state_type, std::span<const std::uint8_t> blob);
std::vector<std::uint8_t> encode_accept(const Accept& a);
std::vector<std::uint8_t> encode_done(const Done& d);
std::vector<std::uint8_t> encode_end();
std::vector<std::uint8_t> encode_ready(const Ready& r);
std::vector<std::uint8_t> encode_commit();

// Builds a page-batch record without copying page data: the result is a list
// of iovecs (record header + batch header + descriptors, the page data where
// it already is, padding) ready for writev.  Page data must stay valid until
// the iovecs are written.
//
// Body: round:u32 count:u32 reserved:u64  desc[count]:u64  data...
class BatchEncoder {
public:
    BatchEncoder();
    void begin(std::uint32_t round);
    void add(Pfn pfn, PageEncoding enc, std::span<const std::uint8_t> data);
    void add_zero(Pfn pfn) { add(pfn, PageEncoding::zero, {}); }
    // n consecutive pages from `first` that are all zero (kind zero) or free
    // (kind free): one ZERO_RUN / FREE_RUN descriptor, or a plain ZERO / FREE
    // one when n == 1.  1 <= n <= kMaxRun and the run may not cross a
    // channel region (wire::channel_of); otherwise Error.
    void add_run(Pfn first, std::uint32_t n, PageEncoding kind);
    // A deflate group: pfns[0] carries `blob` (not copied: it must stay valid
    // until the iovecs are written), pfns[1..] follow as continuations.
    // 1 <= pfns.size() <= kMaxGroupPages, 1 <= blob.size() <=
    // pfns.size() * kMaxEncodedPage, and the batch must have room for all of
    // them (check room() first); otherwise Error and the batch is unchanged.
    // add(pfn, deflate, blob) is the same as a group of one page.
    void add_group(std::span<const Pfn> pfns, std::span<const std::uint8_t> blob);
    // Descriptors that can still be added.
    std::size_t room() const { return kMaxBatchPages - descs_.size(); }
    std::size_t count() const { return descs_.size(); }
    bool full() const { return descs_.size() >= kMaxBatchPages; }
    bool empty() const { return descs_.empty(); }
    // Bytes this record will take on the wire (valid after finish()).
    std::size_t wire_size() const { return wire_size_; }
    // Seals the record (lengths, CRC) and returns the iovecs to write.
    std::span<const iovec> finish();

private:
    std::uint32_t round_ = 0;
    std::vector<std::uint64_t> descs_;
    std::vector<iovec> data_;
    std::vector<std::uint8_t> head_; // record header + batch header + descriptors
    std::vector<iovec> iov_;
    std::uint64_t data_bytes_ = 0;
    std::size_t wire_size_ = 0;
};

// Several connections ("channels").  Channel 0 is the connection that sent
// HEADER; it announces the others with CHANNELS, and each other connection
// opens with its magic and CHANNEL_HELLO.  Pages of one pfn always travel on
// the same channel: channel_of(pfn) below, a protocol rule the receiver
// enforces, which keeps every pfn's rounds in order whatever the channels'
// relative timing.
constexpr std::uint32_t kMaxChannels = 16;
constexpr unsigned kChannelRegionShift = 9; // 2 MiB regions of pfns
static_assert(kMaxRun == 1u << kChannelRegionShift, "a run is at most one channel region");
inline std::uint32_t channel_of(Pfn pfn, std::uint32_t nr_channels)
{
    return static_cast<std::uint32_t>((pfn >> kChannelRegionShift) % nr_channels);
}
// Does `next` extend the run of `len` pages from `first` (ZERO_RUN,
// FREE_RUN)?  It must follow it directly and stay in its channel region,
// which also keeps the run within kMaxRun pages.
inline bool extends_run(Pfn first, std::uint64_t len, Pfn next)
{
    return next == first + len && (next >> kChannelRegionShift) == (first >> kChannelRegionShift);
}
struct Channels {
    std::uint32_t count = 1;   // 1..kMaxChannels, including channel 0
    std::uint64_t session = 0; // random; joins the extra connections to this stream
};
struct ChannelHello {
    std::uint32_t index = 0;   // 1..count-1
    std::uint64_t session = 0;
};
std::vector<std::uint8_t> encode_channels(const Channels& c);
std::vector<std::uint8_t> encode_channel_hello(const ChannelHello& h);
Channels parse_channels(std::span<const std::uint8_t> body);
ChannelHello parse_channel_hello(std::span<const std::uint8_t> body);

// ---- decoding -------------------------------------------------------------

// Where a decoder reads from (a socket, a file, a buffer in tests).
class ByteSource {
public:
    virtual ~ByteSource() = default;
    // Fill buf completely or throw (Error on I/O failure, StreamError on EOF).
    virtual void read_exact(std::span<std::uint8_t> buf) = 0;
};

// A ByteSource over memory, for tests and fuzzing.
class MemorySource : public ByteSource {
public:
    explicit MemorySource(std::span<const std::uint8_t> data) : data_(data) {}
    void read_exact(std::span<std::uint8_t> buf) override;
    std::size_t remaining() const { return data_.size() - pos_; }

private:
    std::span<const std::uint8_t> data_;
    std::size_t pos_ = 0;
};

// Reads and checks the 8-byte magic; `expected` is kSourceMagic or kReplyMagic.
void read_magic(ByteSource& src, const std::array<std::uint8_t, 8>& expected);

struct Record {
    RecordType type;
    std::span<const std::uint8_t> body; // valid until the next read()
};

// Checks the tag that follows every record of an authenticated connection
// (docs: Authentication); implemented in stream/auth/auth.hpp, so this header
// needs no crypto library.
class RecordVerifier {
public:
    virtual ~RecordVerifier() = default;
    virtual std::size_t tag_size() const = 0;
    // `header` and `rest` (body and padding) are the record as received.
    // Throws AuthError naming `what` if the tag does not verify.  A
    // decrypting verifier turns `rest` into the clear body in place.
    virtual void verify(const char* what, std::span<const std::uint8_t> header, std::span<std::uint8_t> rest,
                        std::span<const std::uint8_t> tag) = 0;
    // true when the tag covers what the CRC would (an AEAD): the header's
    // crc field then travels as 0, since a CRC of the clear body would tell
    // an observer about it (docs/stream-format.md, Encryption).
    virtual bool replaces_crc() const { return false; }
};

// Reads records one by one into a reused buffer: checks the type is known,
// the length is within the limit for that type, the record's tag when the
// connection is authenticated, the CRC, and that padding is zero.  Counts
// the bytes it consumed (tags included).
class RecordReader {
public:
    explicit RecordReader(ByteSource& src) : src_(src) {}
    Record read();
    // Hands the buffer holding the last record's body to the caller and
    // reads the next records into `spare`: the body span stays valid for as
    // long as the caller keeps the buffer (records passed on without a copy).
    void swap_buffer(std::vector<std::uint8_t>& spare) { buf_.swap(spare); }
    std::uint64_t bytes_read() const { return bytes_read_; }
    // From the next record on, every record must carry a tag that `v` accepts.
    void set_verifier(std::unique_ptr<RecordVerifier> v) { verifier_ = std::move(v); }
    bool authenticated() const { return verifier_ != nullptr; }

private:
    ByteSource& src_;
    std::vector<std::uint8_t> buf_;
    std::uint64_t bytes_read_ = 0;
    std::unique_ptr<RecordVerifier> verifier_;
};

StreamHeader parse_header(std::span<const std::uint8_t> body);
RoundEnd parse_round_end(std::span<const std::uint8_t> body);
RoundEnd parse_round_ack(std::span<const std::uint8_t> body);
Accept parse_accept(std::span<const std::uint8_t> body);
Done parse_done(std::span<const std::uint8_t> body);
void parse_end(std::span<const std::uint8_t> body);
Ready parse_ready(std::span<const std::uint8_t> body);
void parse_commit(std::span<const std::uint8_t> body);

struct PlatformState {
    std::uint32_t state_type = 0;
    std::span<const std::uint8_t> data; // points into the record body
};
PlatformState parse_platform_state(std::span<const std::uint8_t> body);
PlatformState parse_early_state(std::span<const std::uint8_t> body);

// A decoded page batch; data spans point into the record body.
struct PageBatch {
    std::uint32_t round = 0;
    std::uint64_t page_count = 0; // pages described: a ZERO_RUN/FREE_RUN counts its length
    std::vector<PageDesc> pages;  // one per descriptor (a run's length is its page count)
    std::vector<std::span<const std::uint8_t>> data; // one per page, empty for zero/free/continuations
    // One per page: for a deflate group start, the number of pages in the
    // group (pages[i .. i+n-1], data[i] is the blob); 0 for a continuation
    // page of a group; 1 for every other page.
    std::vector<std::uint8_t> group_pages;
};
// Checks count <= kMaxBatchPages, every pfn < nr_pages, every encoding known
// and its length legal (zero/free: 0, raw: kPageSize, xbzrle: 1..kPageSize+64,
// deflate: a group start of 1..n*(kPageSize+64) bytes for its n pages, or a
// continuation of length 0 right after the start or another continuation, at
// most kMaxGroupPages pages per group), and that the lengths add up to the
// body exactly.  Feature bits are not checked here: see check_batch_features.
// `out` is reused to avoid allocations on the hot path.
void parse_page_batch(std::span<const std::uint8_t> body, std::uint64_t nr_pages, PageBatch& out);
// Refuses (StreamError) a batch with a page whose encoding needs a feature
// bit that is not in `features` (the set the destination accepted).
void check_batch_features(const PageBatch& batch, std::uint64_t features);

} // namespace fastmig::wire
