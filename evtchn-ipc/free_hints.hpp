// The free-page hint protocol: dom0 asks a guest agent which page frames
// its allocator holds free, and the agent answers with pfn ranges, in
// batches when they do not fit the shared region (evtchn-ipc/README.md,
// "Free-page hints", is the specification; every check below is a sentence
// there).
//
// Pure code: no I/O, no Xen header, nothing from stream/ (evtchn-ipc is a
// leaf, and fastmig-guest-agent builds these files on their own).  The
// session driver (hint_session.hpp) moves the messages over a shared region
// and a doorbell; this file only encodes and judges them.
//
// Everything the agent writes is hostile: AnswerParser takes a private copy
// of each answer (the guest may rewrite the shared page while dom0 reads
// it) and refuses, with a sentence that names the batch and the range, any
// range outside the guest, out of order or overlapping, a total that moves
// or does not add up, a sequence or batch number that is not the one asked
// for, and more batches or ranges than the limits allow.  A refused answer
// costs the migration its hints, never a page that is not free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace fastmig::ipc::hints {

constexpr std::uint16_t kVersion = 1;
constexpr std::uint32_t kRequestMagic = 0x51484d46; // "FMHQ" little endian
constexpr std::uint32_t kAnswerMagic = 0x41484d46;  // "FMHA" little endian

// Where the two slots live in the shared region: the request at 0, the
// answer from kAnswerOffset to the end of the region.  Separate slots, so a
// side never overwrites what the other has not read yet.
constexpr std::size_t kRequestSize = 32;
constexpr std::size_t kAnswerOffset = 64;
constexpr std::size_t kAnswerHeaderSize = 56;
constexpr std::size_t kRangeSize = 16;
// A region is 1 to kMaxRegionPages pages of 4096 bytes.
constexpr std::size_t kRegionPageSize = 4096;
constexpr std::size_t kMaxRegionPages = 64;

enum class RequestType : std::uint16_t {
    scan = 1, // scan now and send batch 0
    next = 2, // send batch `batch` of the last scan
    done = 3, // dom0 abandoned the scan: drop it (no answer)
};

enum class AnswerType : std::uint16_t {
    ranges = 1,
    refused = 2, // the agent cannot answer; `reason` says why
};

// Why an agent refuses (AnswerType::refused).
enum class RefuseReason : std::uint32_t {
    unknown = 0,
    no_kpageflags = 1,   // /proc/kpageflags unreadable (not root, no CONFIG_PROC_PAGE_MONITOR)
    page_poisoning = 2,  // the guest checks freed pages' contents on allocation
    bad_request = 3,     // the request did not parse (version, type, batch)
    no_scan = 4,         // `next` without a scan, or for another sequence number
};
const char* refuse_reason_name(RefuseReason r);

constexpr std::uint32_t kLastBatch = 1; // AnswerHeader::flags

struct Request {
    RequestType type = RequestType::scan;
    std::uint32_t seq = 0;
    std::uint32_t batch = 0;
    std::uint64_t nr_pages = 0;     // the guest's pfn count as dom0 sees it
    std::uint32_t max_ranges = 0;   // per batch: what dom0's answer slot holds
};

struct Range {
    std::uint64_t first = 0;
    std::uint64_t count = 0;
    std::uint64_t end() const { return first + count; }
    friend bool operator==(const Range&, const Range&) = default;
};

struct AnswerHeader {
    AnswerType type = AnswerType::ranges;
    std::uint32_t seq = 0;
    std::uint32_t batch = 0;
    std::uint32_t flags = 0;
    std::uint32_t count = 0;          // ranges in this batch
    std::uint64_t total_ranges = 0;   // in all batches of this scan
    std::uint64_t total_pages = 0;    // pages in all those ranges
    std::uint64_t scan_ns = 0;        // what the scan cost the agent (informational)
    RefuseReason reason = RefuseReason::unknown;
    bool last() const { return flags & kLastBatch; }
};

// Ranges that fit an answer slot of a region of `region_bytes`.
std::size_t ranges_per_batch(std::size_t region_bytes);

// Encoders write exactly kRequestSize / kAnswerHeaderSize + 16 * count bytes
// into `out` and return that size (0 if `out` is too small).
std::size_t encode_request(const Request& r, std::span<std::uint8_t> out);
std::size_t encode_answer(const AnswerHeader& h, std::span<const Range> ranges, std::span<std::uint8_t> out);
// The two halves of encode_answer, for a writer that must store the header
// (and its magic) after the ranges: kAnswerHeaderSize bytes, and 16 bytes
// a range.
std::size_t encode_answer_header(const AnswerHeader& h, std::span<std::uint8_t> out);
std::size_t encode_ranges(std::span<const Range> ranges, std::span<std::uint8_t> out);

// The agent's side: a request from dom0 (bounds-checked too: a guest
// trusts dom0, but a wrong size must not make it scan past its memory).
// False, with `why`, if malformed.
bool decode_request(std::span<const std::uint8_t> in, Request& out, std::string& why);

// The answer header alone (for the session driver: how many bytes follow).
// False, with `why`, if the magic, version, type or count is wrong for a
// slot of `slot_bytes`.
bool decode_answer_header(std::span<const std::uint8_t> in, std::size_t slot_bytes, AnswerHeader& out,
                          std::string& why);

// The rendezvous in the guest's xenstore (README, "Rendezvous"): keys under
// the guest's own home, values as text.  The parsers take what dom0 read
// (hostile) and accept decimal numbers only, within bounds.
constexpr const char* kXenstoreDir = "data/fastmig-agent";
constexpr std::uint32_t kMaxPort = (1u << 17) - 1; // FIFO ABI limit
bool parse_protocol(const std::string& text, std::uint16_t& out, std::string& why);
bool parse_ring_refs(const std::string& text, std::vector<std::uint32_t>& out, std::string& why);
bool parse_port(const std::string& text, std::uint32_t& out, std::string& why);
std::string format_ring_refs(std::span<const std::uint32_t> refs);

struct Limits {
    std::uint64_t max_ranges = 4u << 20;  // in all batches (64 MiB of ranges at most)
    std::uint32_t max_batches = 4096;
};

// Judges the answers of one scan, batch after batch.
class AnswerParser {
public:
    enum class Status {
        more,     // batch accepted; ask for the next one
        complete, // the last batch arrived and everything adds up
        refused,  // the agent declined (reason()); not an attack
        invalid,  // hostile or broken: error() says what; no range may be used
    };

    AnswerParser(std::uint64_t nr_pages, std::uint32_t seq, Limits limits = {});

    // One answer as dom0 copied it out of the slot (the whole slot or just
    // the message; bytes after the message are ignored).  After complete,
    // refused or invalid, every further call returns the same status.
    Status feed(std::span<const std::uint8_t> answer);

    Status status() const { return status_; }
    // The batch the next feed() must carry.
    std::uint32_t next_batch() const { return batch_; }
    const std::string& error() const { return error_; }
    RefuseReason reason() const { return reason_; }
    std::uint64_t scan_ns() const { return scan_ns_; }
    std::uint64_t total_pages() const { return pages_; }
    // The accepted ranges: ascending, disjoint, inside [0, nr_pages).  Only
    // meaningful once complete(); empty after invalid.
    const std::vector<Range>& ranges() const { return ranges_; }

private:
    Status fail(std::string why);

    std::uint64_t nr_pages_;
    std::uint32_t seq_;
    Limits limits_;
    Status status_ = Status::more;
    std::uint32_t batch_ = 0;
    std::uint64_t declared_ranges_ = 0;
    std::uint64_t declared_pages_ = 0;
    std::uint64_t pages_ = 0;
    std::uint64_t scan_ns_ = 0;
    RefuseReason reason_ = RefuseReason::unknown;
    std::string error_;
    std::vector<Range> ranges_;
};

} // namespace fastmig::ipc::hints
