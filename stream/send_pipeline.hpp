// The source's pipeline (see DESIGN.md, data flow):
//
//   producer (precopy loop) --jobs--> worker pool --encoded--> one writer per channel --> socket
//
// The producer groups pfns into jobs per channel (wire::channel_of); workers
// read the pages, classify them (zero, XBZRLE delta, deflate group, raw) and
// build the PAGE_BATCH record as iovecs over their own buffers; each channel's
// writer sends them with one sendmsg (page data is never copied on its way to
// the socket).  Jobs come from a fixed pool, so memory is bounded whatever
// the guest size: (2*threads + 3*channels + 2) jobs of batch_pages pages,
// each holding 2 x batch_pages x 4 KiB (pages + encoded output).
#pragma once

#include "stream/auth/auth.hpp"
#include "stream/bounded_queue.hpp"
#include "stream/codec/codec.hpp"
#include "stream/domain.hpp"
#include "stream/token_bucket.hpp"
#include "stream/wire.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

namespace fastmig {

struct PipelineConfig {
    unsigned threads = 2;
    std::uint32_t batch_pages = 512;
    bool zero_detect = true;
    codec::CompressionConfig compression; // algorithm none: never compress
    std::size_t xbzrle_cache_bytes = 0;   // 0: no XBZRLE
    double max_bandwidth = 0;             // bytes/s, 0: unlimited
};

// Counters, summed over the whole migration (the engine diffs them per round).
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

class SendPipeline {
public:
    // One writer per channel (authenticated or not: see auth::RecordWriter).
    SendPipeline(Domain& dom, std::vector<auth::RecordWriter*> writers, PipelineConfig cfg);
    ~SendPipeline();
    SendPipeline(const SendPipeline&) = delete;
    SendPipeline& operator=(const SendPipeline&) = delete;

    unsigned channels() const { return static_cast<unsigned>(writers_.size()); }

    // Producer side (one thread).  Throws the pipeline's first error.
    void add(Pfn pfn, std::uint32_t round);
    // A page the guest reports free: sent as a FREE descriptor, never read.
    void add_free(Pfn pfn, std::uint32_t round);
    // Sends partial batches and waits until everything queued is written.
    void drain();
    // Queue a record on one channel, after everything already queued there
    // (call drain() first when the order relative to pages matters).
    void send_record(unsigned channel, std::vector<std::uint8_t> record);

    PipelineCounters counters() const;
    // Re-estimate the link rate (bytes per second of writers' busy time, so
    // it is not limited by how fast workers feed them) and the compressors'
    // rate, and let the compression policy decide whether compressing pays.
    // Call it often (the producer does every 1024 pages): it samples only
    // every CompressionGate::kUpdateInterval, and between those costs one
    // clock read.  Producer thread only.
    void update_rates();
    // Whether the workers compress now, and why (the last update_rates();
    // nullopt without a compressor).  Producer thread only.
    std::optional<codec::GateVerdict> compression_verdict() const;

private:
    struct Job;
    // One compression policy per worker, so the entropy probe and the
    // region bookkeeping never serialise the workers; each lock is only
    // contended by update_rates().  A region's verdict is learnt by each
    // worker separately: a few more probes, no shared state.
    struct WorkerPolicy {
        std::mutex lock;
        std::optional<codec::CompressionPolicy> policy;
    };

    void worker_main(unsigned index);
    void writer_main(unsigned channel);
    void encode(Job& job, WorkerPolicy& wp);
    void fail(std::exception_ptr e);
    void rethrow_if_failed();
    void submit(Job* job);
    void queue(std::vector<Job*>& pending, Pfn pfn, std::uint32_t round, bool free_only);

    Domain& dom_;
    std::vector<auth::RecordWriter*> writers_;
    PipelineConfig cfg_;
    TokenBucket bucket_;

    std::vector<std::unique_ptr<Job>> jobs_;
    BoundedQueue<Job*> free_;
    BoundedQueue<Job*> work_;
    std::vector<std::unique_ptr<BoundedQueue<Job*>>> out_;
    std::vector<Job*> pending_;      // per channel, being filled by the producer
    std::vector<Job*> pending_free_; // the same for free pages

    // XBZRLE caches, one per channel (a pfn always uses the same channel).
    std::vector<std::unique_ptr<codec::PageCache>> caches_;
    std::vector<std::unique_ptr<std::mutex>> cache_locks_;
    std::vector<std::unique_ptr<WorkerPolicy>> policies_;
    std::optional<codec::CompressionGate> gate_; // decides for every worker's policy (update_rates)
    bool same_host_ = false;                     // every channel's peer is on this host (GateSample::same_host)

    std::mutex m_;
    std::condition_variable idle_cv_;
    std::uint64_t outstanding_ = 0;
    std::exception_ptr error_;
    std::atomic<bool> failed_{false};

    mutable std::mutex counters_lock_;
    PipelineCounters counters_;

    std::vector<std::thread> threads_;
};

} // namespace fastmig
