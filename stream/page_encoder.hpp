// The source's page work (see DESIGN.md, data flow): one batch of pfns in,
// one PAGE_BATCH record out, as iovecs over the batch's own buffers.
//
// For each page with data, in this order of preference:
//   zero       nothing but a descriptor (consecutive ones: one ZERO_RUN)
//   XBZRLE     a re-dirtied page whose change from the copy last sent is small
//   deflate    a group of up to kMaxGroupPages consecutive data pages, when
//              the region compresses (codec::CompressionPolicy decides)
//   raw        the page itself, never copied again on its way to the socket
// Pages the guest reported free are never read: FREE descriptors and runs.
//
// One PageEncoder per worker thread: the compressor and the compression
// policy are its own, so workers never serialise on them.  The XBZRLE
// caches are per channel and shared (EncoderCaches): a pfn always travels
// on the same channel, whichever worker encodes it.  SendPipeline owns the
// threads and queues around this; nothing here knows of them.
#pragma once

#include "stream/codec/codec.hpp"
#include "stream/domain.hpp"
#include "stream/page_memory.hpp"
#include "stream/wire.hpp"

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include <sys/uio.h>

namespace fastmig {

struct PipelineConfig {
    unsigned threads = 2;
    std::uint32_t batch_pages = 512;
    bool zero_detect = true;
    codec::CompressionConfig compression; // algorithm none: never compress
    std::size_t xbzrle_cache_bytes = 0;   // 0: no XBZRLE
    double max_bandwidth = 0;             // bytes/s, 0: unlimited
};

// Counters of the encoders and the writers, summed over the whole migration
// (the engine diffs them per round).
struct PipelineCounters {
    std::uint64_t pages = 0;
    std::uint64_t zero_pages = 0;
    std::uint64_t free_pages = 0;
    std::uint64_t raw_pages = 0;
    std::uint64_t deflate_pages = 0;
    std::uint64_t deflate_in = 0, deflate_out = 0; // bytes before/after
    std::uint64_t xbzrle_pages = 0, xbzrle_bytes = 0;
    std::uint64_t xbzrle_hits = 0, xbzrle_misses = 0;
    std::uint64_t wire_bytes = 0;
    std::uint64_t compress_ns = 0;
    std::uint64_t write_ns = 0; // writers' time in send (incl. --max-bandwidth waits)

    PipelineCounters& operator+=(const PipelineCounters& o)
    {
        pages += o.pages;
        zero_pages += o.zero_pages;
        free_pages += o.free_pages;
        raw_pages += o.raw_pages;
        deflate_pages += o.deflate_pages;
        deflate_in += o.deflate_in;
        deflate_out += o.deflate_out;
        xbzrle_pages += o.xbzrle_pages;
        xbzrle_bytes += o.xbzrle_bytes;
        xbzrle_hits += o.xbzrle_hits;
        xbzrle_misses += o.xbzrle_misses;
        wire_bytes += o.wire_bytes;
        compress_ns += o.compress_ns;
        write_ns += o.write_ns;
        return *this;
    }
};

// One batch on its way from the domain to a channel: what to send, the
// buffers it is read and encoded into (reused batch after batch), and the
// record that comes out.  The iovecs point into the buffers until the
// writer has sent them.
struct PageBatch {
    // One mapping for the pages and the encoded output, faulted in on first
    // use (in huge pages where possible; see page_memory.hpp): zeroing 4 MiB
    // per batch at start-up costs more than the rest of a small migration's set-up.
    explicit PageBatch(std::uint32_t batch_pages);

    std::uint32_t channel = 0;
    std::uint32_t round = 0;
    std::vector<Pfn> pfns;
    bool free_only = false; // pfns are free pages: FREE descriptors, nothing read

    PageMemory memory;
    std::uint8_t* pages;   // the pages as read from the domain
    std::uint8_t* encoded; // deflate groups and XBZRLE deltas
    std::size_t encoded_size;

    wire::BatchEncoder encoder;
    std::span<const iovec> iov; // the PAGE_BATCH record
    std::size_t wire_size = 0;
    PipelineCounters counts;
};

// The XBZRLE caches, one per channel, shared by every worker's encoder.
class EncoderCaches {
public:
    // `bytes` in all, split between the channels.
    EncoderCaches(std::size_t bytes, unsigned channels);

    struct Locked {
        std::unique_lock<std::mutex> hold;
        codec::PageCache& cache;
    };
    Locked lock(std::uint32_t channel);

private:
    struct PerChannel {
        explicit PerChannel(std::size_t bytes) : cache(bytes) {}
        std::mutex lock;
        codec::PageCache cache;
    };
    std::vector<std::unique_ptr<PerChannel>> channels_;
};

class PageEncoder {
public:
    // `caches` nullptr: no XBZRLE.  With a compression algorithm the encoder
    // sends raw until the first set_verdict() (CompressionGate: the link is
    // not measured yet).
    PageEncoder(Domain& dom, const PipelineConfig& cfg, EncoderCaches* caches);

    // Reads batch.pfns from the domain (unless free_only) and encodes them
    // into batch.iov / batch.wire_size, adding to batch.counts.
    void encode(PageBatch& batch);

    // Whether compressing pays now, and the ratio it must reach (from the
    // pipeline's CompressionGate).  Any thread; no-op without a compressor.
    void set_verdict(bool compress, double ratio_needed);

private:
    struct Pass;
    void encode_free(PageBatch& b);
    void encode_data(PageBatch& b);
    bool send_as_delta(Pass& s, std::size_t i);
    void flush_zeros(Pass& s);
    void flush_run(Pass& s);
    std::size_t compress_group(Pass& s, std::size_t first, std::size_t pages);

    Domain& dom_;
    const bool zero_detect_;
    const codec::Algorithm algorithm_;
    EncoderCaches* caches_;
    // Taken by every group and by set_verdict (the pipeline's producer), so
    // only contended when the verdict changes.
    std::mutex policy_lock_;
    std::optional<codec::CompressionPolicy> policy_;
    std::unique_ptr<codec::Compressor> compressor_; // made on first use
};

} // namespace fastmig
