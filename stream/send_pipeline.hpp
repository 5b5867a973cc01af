// The source's pipeline (see DESIGN.md, data flow):
//
//   producer (precopy loop) --jobs--> worker pool --encoded--> one writer per channel --> socket
//
// The producer groups pfns into jobs per channel (wire::channel_of); each
// worker's PageEncoder (page_encoder.hpp) reads the pages, classifies them
// (zero, XBZRLE delta, deflate group, raw) and builds the PAGE_BATCH record
// as iovecs over the job's own buffers; each channel's writer sends them
// with one sendmsg (page data is never copied on its way to the socket).
// This file is the threads and queues only.  Jobs come from a fixed pool, so memory is bounded whatever
// the guest size: (2*threads + 3*channels + 2) jobs of batch_pages pages,
// each holding 2 x batch_pages x 4 KiB (pages + encoded output).
#pragma once

#include "stream/bounded_queue.hpp"
#include "stream/codec/codec.hpp"
#include "stream/domain.hpp"
#include "stream/first_error.hpp"
#include "stream/page_encoder.hpp"
#include "stream/token_bucket.hpp"
#include "stream/wire.hpp"
#include "stream/wire_writer.hpp"

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

class SendPipeline {
public:
    // One writer per channel (authenticated or not: see stream/wire_writer.hpp).
    SendPipeline(Domain& dom, std::vector<wire::RecordWriter*> writers, PipelineConfig cfg);
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

    void worker_main(unsigned index);
    void writer_main(unsigned channel);
    void fail(std::exception_ptr e);
    void submit(Job* job);
    void queue(std::vector<Job*>& pending, Pfn pfn, std::uint32_t round, bool free_only);

    Domain& dom_;
    std::vector<wire::RecordWriter*> writers_;
    PipelineConfig cfg_;
    TokenBucket bucket_;

    std::vector<std::unique_ptr<Job>> jobs_;
    BoundedQueue<Job*> free_;
    BoundedQueue<Job*> work_;
    std::vector<std::unique_ptr<BoundedQueue<Job*>>> out_;
    std::vector<Job*> pending_;      // per channel, being filled by the producer
    std::vector<Job*> pending_free_; // the same for free pages

    std::unique_ptr<EncoderCaches> caches_; // XBZRLE, shared by the encoders; null without
    // One encoder per worker, so the entropy probe and the region
    // bookkeeping of the compression policy never serialise the workers.  A
    // region's verdict is learnt by each worker separately: a few more
    // probes, no shared state.
    std::vector<std::unique_ptr<PageEncoder>> encoders_;
    std::optional<codec::CompressionGate> gate_; // decides for every worker's policy (update_rates)
    bool same_host_ = false;                     // every channel's peer is on this host (GateSample::same_host)

    std::mutex m_;
    std::condition_variable idle_cv_;
    std::uint64_t outstanding_ = 0;
    FirstError error_; // set under m_ (drain waits on idle_cv_ for it)

    mutable std::mutex counters_lock_;
    PipelineCounters counters_;

    std::vector<std::thread> threads_;
};

} // namespace fastmig
