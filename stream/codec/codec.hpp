// Page codecs: how page data is shrunk on the wire.  Small C-like API in the
// manner of ISA-L: no allocation on the hot path, caller-provided buffers,
// one object per worker thread (not thread-safe; cheap to create).
//
//  * Deflate groups: up to kMaxGroupPages pages compressed as one raw-deflate
//    stream (ISA-L measured ~8 us fixed cost per call: compressing one page
//    at a time wastes most of the CPU).  ISA-L igzip and zlib produce the same
//    format, so either end may use either library.
//  * XBZRLE: XOR of a page against the copy last sent, run-length encoded;
//    for re-dirtied pages whose change is small (dpdk mbufs, counters).
//  * Selective compression: CompressionPolicy decides per region whether a
//    group is worth compressing, from the ratio it achieved there lately and
//    a cheap entropy probe; CompressionGate stops it when the link is faster
//    than the compressors or the destination is the bottleneck.
#pragma once

#include "stream/types.hpp"
#include "stream/wire.hpp"

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace fastmig::codec {

// The stream's bounds (wire.hpp owns them): pages in a group, and the
// worst-case size of a compressed group or XBZRLE page on the wire; a larger
// one is sent raw instead.  Also the decoders' bound on input length.
using wire::kMaxGroupPages;
constexpr std::size_t kMaxEncodedGroup = std::size_t{wire::kMaxGroupPages} * wire::kMaxEncodedPage;
constexpr std::size_t kMaxXbzrle = wire::kMaxEncodedPage;

enum class Algorithm : std::uint8_t {
    none = 0,
    igzip = 1, // ISA-L, level chosen by measurement
    zlib = 2,
};
const char* algorithm_name(Algorithm a);
// "none", "igzip", "zlib"; throws Error with the list of names otherwise.
Algorithm parse_algorithm(const std::string& name);

class Compressor {
public:
    virtual ~Compressor() = default;
    // Compress `in` (n * kPageSize bytes, 1 <= n <= kMaxGroupPages) as one raw
    // deflate stream into `out`.  Returns the compressed length, or 0 when
    // the result would exceed `limit` bytes (the caller then sends raw).
    virtual std::size_t compress(std::span<const std::uint8_t> in, std::span<std::uint8_t> out,
                                 std::size_t limit) = 0;
    // The same for a group of pages that need not be adjacent in memory
    // (guest pages mapped one by one; 1..kMaxGroupPages pointers to
    // kPageSize bytes each): adjacent pages are compressed where they are,
    // others are first gathered into a staging buffer of this compressor
    // (one 64 KiB memcpy, a few percent of the cost of compressing it).
    std::size_t compress_pages(std::span<const std::uint8_t* const> pages, std::span<std::uint8_t> out,
                               std::size_t limit);

private:
    std::vector<std::uint8_t> staging_;
};
class Decompressor {
public:
    virtual ~Decompressor() = default;
    // Inflate `in` into exactly out.size() bytes.  Throws StreamError when
    // the input is corrupt, too short, or produces more or less than
    // out.size() bytes (hostile input: never writes past `out`).
    virtual void decompress(std::span<const std::uint8_t> in, std::span<std::uint8_t> out) = 0;
};
// igzip levels 0..3 (1 by measurement, see deflate.cpp), zlib 1..9; Error
// otherwise.  Algorithm::none gives nullptr (nothing to run: send raw).
std::unique_ptr<Compressor> make_compressor(Algorithm a, int level = 1);
// Any algorithm's output inflates with either decompressor (both are deflate);
// none gives the igzip inflater.
// Input is bounded like the wire bounds it (1..n*(kPageSize+64) bytes for
// n = out.size()/kPageSize pages), so the work per call is bounded too.
std::unique_ptr<Decompressor> make_decompressor(Algorithm a);

// XBZRLE (format: docs/stream-format.md, "XBZRLE delta").  Encode the
// difference between `old_page` and `new_page` into `out`; returns its length
// (>= 3, also for an unchanged page), or 0 as soon as it would exceed
// min(limit, out.size(), kMaxXbzrle) (send the page another way).  Decode
// applies a delta to `page` in place; throws StreamError on malformed input,
// and then has not changed the page at all (never writes outside it).
std::size_t xbzrle_encode(std::span<const std::uint8_t> old_page, std::span<const std::uint8_t> new_page,
                          std::span<std::uint8_t> out, std::size_t limit);
void xbzrle_decode(std::span<const std::uint8_t> delta, std::span<std::uint8_t> page);

// A bounded cache of pages as last sent, for XBZRLE on the source.  Size in
// bytes (bytes / kPageSize slots, allocated once); CLOCK (second-chance)
// eviction when full, so re-sent pages that hit stay and pages sent once
// are recycled (page_cache.cpp).  find/put/erase O(1).  find counts hits
// and misses.  Not thread-safe: the engine gives each channel its own cache
// over the pfns that channel carries.  The cache must hold exactly what the
// destination holds: every send of a pfn by another encoding (raw, deflate,
// zero, free) must put() the new content or erase() the pfn.
class PageCache {
public:
    explicit PageCache(std::size_t bytes);
    ~PageCache();
    PageCache(const PageCache&) = delete;
    PageCache& operator=(const PageCache&) = delete;
    // The cached copy of pfn, or nullptr.
    const std::uint8_t* find(Pfn pfn) const;
    // Store (or replace) the copy of pfn.
    void put(Pfn pfn, std::span<const std::uint8_t> page);
    void erase(Pfn pfn);
    std::size_t capacity_pages() const;
    std::uint64_t hits() const;
    std::uint64_t misses() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Byte-entropy probe of a page: an estimate in bits per byte (0..8) from a
// sample; high values predict incompressible data.  ~1.5 us per page.
double entropy_probe(std::span<const std::uint8_t> page);

// Decides, per region of guest memory, whether to compress.  One per worker
// thread or shared behind the engine's own lock (not thread-safe).
struct CompressionConfig {
    Algorithm algorithm = Algorithm::igzip;
    // Compress a region only while it achieves this.  1.3: at that ratio a
    // 64 KiB group saves 121 us on a 1 Gbit/s link and costs ~110 us of one
    // core to compress (level 1, binary-like data) plus the destination's
    // inflate; below it the saving no longer clearly pays for the CPU of
    // both ends.  Text (~5) and binary structures (~2) pass, random (1.0)
    // does not.  The gate's verdict raises the bar when the link is fast.
    double min_ratio = 1.3;
    std::uint32_t region_pages = 256;  // 1 MiB regions
    std::uint32_t reprobe_after = 64;  // groups sent raw before a region is tried again
    double entropy_limit = 7.2;        // bits/byte above which a page is not even tried
    // Groups a region sends raw without probing after the entropy probe
    // judged its groups random k times in a row: 2^(k-1) - 1, at most this
    // (15: the rest of a 1 MiB region of 64 KiB groups).  A random region
    // pays ~5 probes per pass instead of 16; a region where random groups
    // sit among text ones (images in a page cache) rarely sees two in a row
    // and keeps compressing its text.
    std::uint32_t entropy_skip = 15;
    bool always = false;               // ablation: compress everything
};
class CompressionPolicy {
public:
    CompressionPolicy(CompressionConfig cfg, std::uint64_t nr_pages);
    // Should the group starting at pfn be compressed?  No when the region is
    // in its raw spell after a bad ratio, when the link outruns the
    // compressors, or when the entropy of the group's first and last pages
    // is above entropy_limit; always yes with `always`.
    bool should_compress(Pfn first_pfn, std::span<const std::uint8_t> group);
    // Report what compressing a group in that region achieved
    // (compressed_bytes 0: the compressor gave up, counts as ratio 1).  A
    // region whose average falls below max(min_ratio, ratio_needed()) goes
    // raw for reprobe_after groups.
    void record(Pfn first_pfn, std::size_t raw_bytes, std::size_t compressed_bytes);
    // CompressionGate's verdict: compress at all, and the ratio a region
    // must reach (max'd with min_ratio).  Compression resumes when a later
    // verdict says the link is the bottleneck again.
    void set_verdict(bool pays, double ratio_needed);
    // True while compressing can pay at the current rates.
    bool link_bound() const;
    // Entropy probes run so far (each costs ~1.5 us per probed page).
    std::uint64_t probes() const { return probes_; }

    // The ratio a group must be expected to reach for compressing it to pay
    // at the current rates (1 until a verdict came; infinity while
    // compressing does not pay).  The derivation is in policy.cpp.
    double ratio_needed() const { return ratio_needed_; }
    // Ratio achieved over every group recorded so far (raw / compressed).
    double overall_ratio() const;

private:
    struct Region {
        float ratio = 0;         // moving average of raw/compressed; 0 = never tried
        std::uint32_t skip = 0;  // groups still to send raw before the next probe
        std::uint32_t random_run = 0; // entropy probes in a row that found random data
    };
    Region* region(Pfn pfn);
    CompressionConfig cfg_;
    std::vector<Region> regions_;
    bool compress_pays_ = true;
    double ratio_needed_ = 1.0;
    std::uint64_t raw_total_ = 0, compressed_total_ = 0;
    std::uint64_t probes_ = 0;
};

// Whether compressing can pay at all, from what the source measures; the
// verdict goes to every worker's CompressionPolicy (set_verdict).  The
// pipeline asks every 1024 pages whether an update is due() and, at most
// every kUpdateInterval, calls update() with its figures so far; tests call
// it with a scripted clock and scripted figures.  The rule (derived in
// policy.cpp): compress a region iff its ratio R > 1 / (1 - L / (C T)).
// What decides L and C (issue 16):
//   - no evidence, no compression: raw until kEvidenceBytes went out, so the
//     link is measured before anything is compressed; then the link is
//     re-measured every interval (kLinkInterval), not averaged since the start;
//   - until the compressors have been measured, their rate is a
//     conservative nominal one (kNominalCompressRate per thread), so only a
//     slow link turns compression on before there is evidence;
//   - when the destination's receive window held the sender back for most
//     of the last interval (TCP_INFO's rwnd_limited), the destination, not
//     the link, is the bottleneck: the writers' busy time then measures the
//     destination's speed, and compressing would only give it more work.
struct GateSample {
    std::uint64_t wire_bytes = 0;  // written to the channels so far
    double write_s = 0;            // writers' busy time, divided by the channels (they overlap)
    std::uint64_t compress_in = 0; // bytes the compressors took
    double compress_s = 0;         // their time, summed over the workers
    // The channels' TCP statistics, summed, in seconds (Linux tcp_info
    // chrono): time with data to send, and the part of it the receiver's
    // window held the sender back.  Negative: unknown (not a TCP socket).
    double tcp_busy_s = -1, tcp_rwnd_limited_s = -1;
    double now_s = -1;     // a monotonic clock, seconds (negative: unknown)
    unsigned channels = 1; // how many sockets the TCP figures sum
    // The destination runs on this host (a TCP peer on a loopback address or
    // on the socket's own address) and no bandwidth cap makes a link: the
    // "link" is then a kernel memcpy on the same cores as the compressors
    // and the destination's inflaters, and its apparent rate is the
    // destination's CPU speed, not a wire's.  Compressing can only slow both.
    bool same_host = false;
};
struct GateVerdict {
    // Why the gate went the way it did; only link_bound compresses.
    enum class Reason : std::uint8_t {
        no_estimate,       // the link is not measured yet
        destination_bound, // the receive window held the sender back
        link_outruns,      // the link is faster than the compressors
        same_host,         // the destination shares this host's cores (GateSample::same_host)
        link_bound,        // the link is the bottleneck: compress regions above ratio_needed
    };
    Reason reason = Reason::no_estimate;
    bool compress() const { return reason == Reason::link_bound; }
    double ratio_needed = 0;                 // a region compresses while its ratio is above this
    double link_rate = 0;                    // bytes/s (0: unknown yet)
    double compress_rate = 0;                // per thread, bytes/s
    bool compress_rate_measured = false;     // false: the nominal rate
    double destination_bound = -1;           // share of the last interval the receive window limited (-1: unknown)
    double link_busy = -1;                   // share of the last interval's wall time the sockets had data in flight (-1: unknown)
    unsigned threads = 1;                    // compressing threads the rule counted
    // The reason with the figures, for the log and --json: built when asked
    // (once a round), not at every update.
    std::string why() const;
};
class CompressionGate {
public:
    static constexpr std::uint64_t kEvidenceBytes = 4u << 20;
    // igzip level 1 runs at 0.3-0.8 GB/s per core on text here; the
    // nominal figure is the low end halved, for a loaded host.
    static constexpr double kNominalCompressRate = 150e6;
    // An interval is judged on at least this much TCP busy time (the
    // kernel counts it in jiffies).
    static constexpr double kMinInterval = 0.05;
    // The link rate is re-measured over every interval of at least this much
    // writer time (and kEvidenceBytes), so that a link that changes speed
    // mid-run is followed; the first estimate comes at kEvidenceBytes.
    static constexpr double kLinkInterval = 0.25;
    static constexpr double kDestinationBound = 0.5;
    // The shortest interval the gate judges on: samples closer together
    // than this would only cost the pipeline (a TCP_INFO per channel, every
    // worker's policy lock) without a new figure.
    static constexpr double kUpdateInterval = kMinInterval;

    explicit CompressionGate(unsigned threads, double nominal_compress_rate = kNominalCompressRate);
    // Whether a sample taken at now_s (the clock of GateSample::now_s) is
    // worth an update(): kUpdateInterval after the last one; always before
    // the first link estimate, and without a clock (negative).
    bool due(double now_s) const;
    const GateVerdict& update(const GateSample& s);
    const GateVerdict& verdict() const { return v_; }

private:
    unsigned threads_;
    double nominal_;
    GateVerdict v_;
    double busy_mark_ = 0, rwnd_mark_ = 0, time_mark_ = -1; // TCP figures and clock where the current interval started
    std::uint64_t link_mark_bytes_ = 0;    // writers' figures where the current link interval started
    double link_mark_s_ = 0;
    double last_update_s_ = -1;
};

} // namespace fastmig::codec
