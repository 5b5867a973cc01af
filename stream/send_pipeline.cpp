#include "stream/send_pipeline.hpp"

#include "stream/classify.hpp"
#include "stream/clock.hpp"
#include "stream/page_memory.hpp"
#include "stream/transport.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <arpa/inet.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace fastmig {

struct SendPipeline::Job {
    // One mapping for the pages and the encoded output, faulted in on first
    // use (in huge pages where possible; see page_memory.hpp): zeroing 4 MiB
    // per job at start-up costs more than the rest of a small migration's set-up.
    explicit Job(std::uint32_t batch_pages)
        : memory(std::size_t{batch_pages} * kPageSize + std::size_t{batch_pages} * (kPageSize + 64)),
          pages(memory.data()), encoded(memory.data() + std::size_t{batch_pages} * kPageSize),
          encoded_size(std::size_t{batch_pages} * (kPageSize + 64))
    {
        pfns.reserve(batch_pages);
    }

    std::uint32_t channel = 0;
    std::uint32_t round = 0;
    std::vector<Pfn> pfns;
    PageMemory memory;
    std::uint8_t* pages;
    std::uint8_t* encoded; // deflate groups and XBZRLE deltas
    std::size_t encoded_size;
    wire::BatchEncoder encoder;
    std::span<const iovec> iov;
    std::size_t wire_size = 0;
    std::vector<std::uint8_t> record; // a control record instead of pages
    bool free_only = false;           // pfns are free pages: FREE descriptors, nothing read
    PipelineCounters counts;
};

namespace {

// The sender-side TCP chrono of a socket (Linux 4.10+): seconds with data
// to send, and of them, held back by the receiver's window.  False when fd
// is not a TCP socket (a pipe from libxl) or the kernel does not say.
bool tcp_chrono(int fd, double& busy_s, double& rwnd_limited_s)
{
    tcp_info ti{};
    socklen_t len = sizeof ti;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
        len < offsetof(tcp_info, tcpi_rwnd_limited) + sizeof ti.tcpi_rwnd_limited)
        return false;
    busy_s += double(ti.tcpi_busy_time) * 1e-6;
    rwnd_limited_s += double(ti.tcpi_rwnd_limited) * 1e-6;
    return true;
}

// Whether a TCP socket's peer is on this host: a loopback address, or the
// socket's own address.  False for anything else (a pipe or a UNIX socket
// from libxl may lead to ssh and another host).
bool peer_on_this_host(int fd)
{
    sockaddr_storage peer{}, self{};
    socklen_t lp = sizeof peer, ls = sizeof self;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &lp) < 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&self), &ls) < 0 || peer.ss_family != self.ss_family)
        return false;
    if (peer.ss_family == AF_INET) {
        const auto& p = reinterpret_cast<const sockaddr_in&>(peer).sin_addr;
        const auto& s = reinterpret_cast<const sockaddr_in&>(self).sin_addr;
        return (ntohl(p.s_addr) >> 24) == 127 || p.s_addr == s.s_addr;
    }
    if (peer.ss_family == AF_INET6) {
        const auto& p = reinterpret_cast<const sockaddr_in6&>(peer).sin6_addr;
        const auto& s = reinterpret_cast<const sockaddr_in6&>(self).sin6_addr;
        const bool v4_loopback = IN6_IS_ADDR_V4MAPPED(&p) && p.s6_addr[12] == 127;
        return IN6_IS_ADDR_LOOPBACK(&p) || v4_loopback || std::memcmp(&p, &s, sizeof p) == 0;
    }
    return false;
}

} // namespace

SendPipeline::SendPipeline(Domain& dom, std::vector<auth::RecordWriter*> writers, PipelineConfig cfg)
    : dom_(dom), writers_(std::move(writers)), cfg_(cfg), bucket_(cfg.max_bandwidth),
      free_(2 * cfg.threads + 3 * writers_.size() + 2), work_(2 * cfg.threads + writers_.size())
{
    if (writers_.empty() || writers_.size() > wire::kMaxChannels)
        throw Error("channels must be 1.." + std::to_string(wire::kMaxChannels));
    if (cfg_.threads < 1 || cfg_.threads > 256)
        throw Error("threads must be 1..256");
    std::size_t njobs = 2 * cfg_.threads + 3 * writers_.size() + 2;
    for (std::size_t i = 0; i < njobs; ++i) {
        jobs_.push_back(std::make_unique<Job>(cfg_.batch_pages));
        free_.push(jobs_.back().get());
    }
    pending_.assign(writers_.size(), nullptr);
    pending_free_.assign(writers_.size(), nullptr);
    for (std::size_t c = 0; c < writers_.size(); ++c) {
        out_.push_back(std::make_unique<BoundedQueue<Job*>>(3));
        if (cfg_.xbzrle_cache_bytes)
            caches_.push_back(std::make_unique<codec::PageCache>(cfg_.xbzrle_cache_bytes / writers_.size()));
        cache_locks_.push_back(std::make_unique<std::mutex>());
    }
    if (cfg_.compression.algorithm != codec::Algorithm::none) {
        gate_.emplace(cfg_.threads);
        // With --max-bandwidth the token bucket is the link, wherever the
        // destination runs.
        same_host_ = cfg_.max_bandwidth <= 0 &&
                     std::all_of(writers_.begin(), writers_.end(), [](auto* w) { return peer_on_this_host(w->fd()); });
    }
    for (unsigned t = 0; t < cfg_.threads; ++t) {
        policies_.push_back(std::make_unique<WorkerPolicy>());
        if (gate_) {
            policies_.back()->policy.emplace(cfg_.compression, dom_.nr_pages());
            // Raw until the link is measured (CompressionGate).
            policies_.back()->policy->set_verdict(gate_->verdict().compress(), gate_->verdict().ratio_needed);
        }
    }
    try {
        for (unsigned t = 0; t < cfg_.threads; ++t)
            threads_.emplace_back([this, t] {
                name_this_thread("fm-worker-" + std::to_string(t));
                worker_main(t);
            });
        for (unsigned c = 0; c < writers_.size(); ++c)
            threads_.emplace_back([this, c] {
                name_this_thread("fm-writer-" + std::to_string(c));
                writer_main(c);
            });
    } catch (...) {
        fail(std::current_exception());
        for (auto& t : threads_)
            t.join();
        throw;
    }
}

SendPipeline::~SendPipeline()
{
    free_.close();
    work_.close();
    for (auto& q : out_)
        q->close();
    for (auto& t : threads_)
        t.join();
}

void SendPipeline::fail(std::exception_ptr e)
{
    {
        std::lock_guard<std::mutex> l(m_);
        if (!error_)
            error_ = e;
        failed_ = true;
    }
    // Wake every stage: they stop at their next queue operation.
    free_.close();
    work_.close();
    for (auto& q : out_)
        q->close();
    idle_cv_.notify_all();
}

void SendPipeline::rethrow_if_failed()
{
    if (failed_) {
        std::lock_guard<std::mutex> l(m_);
        std::rethrow_exception(error_);
    }
}

void SendPipeline::submit(Job* job)
{
    {
        std::lock_guard<std::mutex> l(m_);
        ++outstanding_;
    }
    if (!work_.push(job))
        rethrow_if_failed();
}

void SendPipeline::queue(std::vector<Job*>& pending, Pfn pfn, std::uint32_t round, bool free_only)
{
    std::uint32_t c = wire::channel_of(pfn, channels());
    Job*& job = pending[c];
    if (!job) {
        auto j = free_.pop();
        if (!j)
            rethrow_if_failed();
        job = *j;
        job->channel = c;
        job->round = round;
        job->free_only = free_only;
        job->pfns.clear();
        job->record.clear();
    }
    job->pfns.push_back(pfn);
    // Free pages cost a descriptor each, no data: fill whole records.
    if (job->pfns.size() >= (free_only ? wire::kMaxBatchPages : cfg_.batch_pages)) {
        Job* full = job;
        job = nullptr;
        submit(full);
    }
}

void SendPipeline::add(Pfn pfn, std::uint32_t round) { queue(pending_, pfn, round, false); }

void SendPipeline::add_free(Pfn pfn, std::uint32_t round) { queue(pending_free_, pfn, round, true); }

void SendPipeline::send_record(unsigned channel, std::vector<std::uint8_t> record)
{
    auto j = free_.pop();
    if (!j)
        rethrow_if_failed();
    Job* job = *j;
    job->channel = channel;
    job->free_only = false;
    job->pfns.clear();
    job->record = std::move(record);
    {
        std::lock_guard<std::mutex> l(m_);
        ++outstanding_;
    }
    if (!out_[channel]->push(job))
        rethrow_if_failed();
}

void SendPipeline::drain()
{
    for (auto* pending : {&pending_, &pending_free_})
        for (auto& job : *pending) {
            if (job) {
                Job* j = job;
                job = nullptr;
                submit(j);
            }
        }
    std::unique_lock<std::mutex> l(m_);
    idle_cv_.wait(l, [&] { return outstanding_ == 0 || failed_; });
    if (failed_)
        std::rethrow_exception(error_);
}

PipelineCounters SendPipeline::counters() const
{
    std::lock_guard<std::mutex> l(counters_lock_);
    return counters_;
}

void SendPipeline::update_rates()
{
    if (!gate_)
        return;
    const double now = double(monotonic_ns()) * 1e-9;
    if (!gate_->due(now))
        return;
    PipelineCounters c = counters();
    codec::GateSample g;
    g.wire_bytes = c.wire_bytes;
    // Channels write in parallel: their busy time overlaps.
    g.write_s = double(c.write_ns) * 1e-9 / double(channels());
    g.compress_in = c.deflate_in;
    g.compress_s = double(c.compress_ns) * 1e-9;
    g.now_s = now;
    g.same_host = same_host_;
    double busy = 0, rwnd = 0;
    bool tcp = true;
    for (auto* w : writers_)
        tcp = tcp && tcp_chrono(w->fd(), busy, rwnd);
    if (tcp) {
        g.tcp_busy_s = busy;
        g.channels = channels();
        g.tcp_rwnd_limited_s = rwnd;
    }
    const codec::GateVerdict before = gate_->verdict();
    const codec::GateVerdict& v = gate_->update(g);
    // The workers' locks only when the verdict changed.
    if (v.reason == before.reason && (v.ratio_needed == before.ratio_needed || !v.compress()))
        return;
    for (auto& wp : policies_) {
        std::lock_guard<std::mutex> l(wp->lock);
        wp->policy->set_verdict(v.compress(), v.ratio_needed);
    }
}

std::optional<codec::GateVerdict> SendPipeline::compression_verdict() const
{
    if (!gate_)
        return std::nullopt;
    return gate_->verdict();
}

void SendPipeline::worker_main(unsigned index)
{
    try {
        while (auto j = work_.pop()) {
            Job* job = *j;
            encode(*job, *policies_[index]);
            if (!out_[job->channel]->push(job))
                return;
        }
    } catch (...) {
        fail(std::current_exception());
    }
}

void SendPipeline::writer_main(unsigned c)
{
    std::uint32_t round = 0;
    try {
        while (auto j = out_[c]->pop()) {
            Job* job = *j;
            round = job->round;
            std::size_t bytes;
            Stopwatch busy;
            // On an authenticated channel the writer tags the record as it
            // sends it (the tag's sequence number is the wire order).
            if (!job->record.empty()) {
                bucket_.take(job->record.size());
                bytes = writers_[c]->write(job->record);
            } else {
                bucket_.take(job->wire_size);
                bytes = writers_[c]->write(job->iov);
            }
            job->counts.wire_bytes = bytes;
            job->counts.write_ns = std::uint64_t(busy.seconds() * 1e9);
            {
                std::lock_guard<std::mutex> l(counters_lock_);
                counters_ += job->counts;
            }
            job->counts = PipelineCounters{};
            if (!free_.push(job))
                return;
            std::lock_guard<std::mutex> l(m_);
            if (--outstanding_ == 0)
                idle_cv_.notify_all();
        }
    } catch (const StreamError&) {
        fail(std::current_exception());
    } catch (const Error& e) {
        // With several channels, "peer stopped reading" alone does not say
        // which connection stalled (the receiver names its side the same way).
        if (writers_.size() == 1 || e.has_context())
            fail(std::current_exception());
        else
            fail(std::make_exception_ptr(
                Error("channel " + std::to_string(c) + " (writing round " + std::to_string(round) + "): " + e.cause())));
    } catch (...) {
        fail(std::current_exception());
    }
}

// Classifies and encodes one job's pages.  Order of preference for a page
// with data: XBZRLE delta (re-dirtied page whose change is small), then a
// deflate group (when the region compresses), then raw.
void SendPipeline::encode(Job& job, WorkerPolicy& wp)
{
    const std::size_t n = job.pfns.size();
    auto& enc = job.encoder;
    auto& k = job.counts;
    enc.begin(job.round);
    if (job.free_only) {
        // Free pages come in pfn order: consecutive ones go as FREE_RUNs.
        for (std::size_t i = 0; i < n;) {
            std::size_t j = i + 1;
            while (j < n && wire::extends_run(job.pfns[i], j - i, job.pfns[j]))
                ++j;
            enc.add_run(job.pfns[i], static_cast<std::uint32_t>(j - i), wire::PageEncoding::free);
            i = j;
        }
        k.pages += n;
        k.free_pages += n;
        job.iov = enc.finish();
        job.wire_size = enc.wire_size();
        return;
    }
    // A copy, not a view of guest memory: the record's CRC covers the page
    // bytes and a running guest may write a page between the CRC and the
    // send, which would fail the whole record at the destination (a torn
    // page in a copy is harmless: the dirty log sends it again).  Cheaper
    // snapshots were weighed for issue 16: a mapping of the sim's memfd
    // costs 5-10x a pread here (page-table updates; see sim_domain.cpp), and
    // in a perf profile of a raw send this read is ~20% of the sender's CPU
    // while the destination, not the source, is the bottleneck.
    dom_.read_pages(job.pfns, {job.pages, n * kPageSize});
    std::size_t out_off = 0;
    const bool use_xbzrle = !caches_.empty() && job.round >= 1;
    const bool may_compress = wp.policy.has_value();

    // Consecutive zero pages waiting to go as one ZERO_RUN descriptor; they
    // precede any data page still pending, so they are placed first.
    Pfn zero_start = 0;
    std::uint32_t zero_len = 0;
    auto flush_zeros = [&] {
        if (zero_len)
            enc.add_run(zero_start, zero_len, wire::PageEncoding::zero);
        zero_len = 0;
    };
    // A run of consecutive data pages waiting to be grouped (indices into job).
    std::size_t run_start = 0, run_len = 0;
    auto flush_run = [&] {
        if (run_len)
            flush_zeros();
        std::size_t i = run_start;
        while (run_len > 0) {
            std::size_t g = std::min<std::size_t>(run_len, codec::kMaxGroupPages);
            std::span<const std::uint8_t> data(job.pages + i * kPageSize, g * kPageSize);
            std::size_t clen = 0;
            bool tried = false;
            if (may_compress) {
                bool go;
                {
                    std::lock_guard<std::mutex> l(wp.lock);
                    go = wp.policy->should_compress(job.pfns[i], data);
                }
                if (go) {
                    tried = true;
                    Stopwatch sw;
                    thread_local std::unique_ptr<codec::Compressor> comp;
                    thread_local codec::Algorithm comp_alg = codec::Algorithm::none;
                    if (!comp || comp_alg != cfg_.compression.algorithm) {
                        comp = codec::make_compressor(cfg_.compression.algorithm);
                        comp_alg = cfg_.compression.algorithm;
                    }
                    // Worth it only if it saves at least 1/16 of the bytes.
                    clen = comp->compress(data, {job.encoded + out_off, job.encoded_size - out_off},
                                          data.size() - data.size() / 16);
                    k.compress_ns += std::uint64_t(sw.seconds() * 1e9);
                    k.deflate_in += data.size();
                }
            }
            if (tried) {
                std::lock_guard<std::mutex> l(wp.lock);
                wp.policy->record(job.pfns[i], data.size(), clen ? clen : data.size());
            }
            if (clen) {
                enc.add_group({job.pfns.data() + i, g}, {job.encoded + out_off, clen});
                out_off += clen;
                k.deflate_pages += g;
                k.deflate_out += clen;
            } else {
                for (std::size_t p = i; p < i + g; ++p)
                    enc.add(job.pfns[p], wire::PageEncoding::raw, {job.pages + p * kPageSize, kPageSize});
                k.raw_pages += g;
            }
            i += g;
            run_len -= g;
        }
    };

    for (std::size_t i = 0; i < n; ++i) {
        const std::uint8_t* page = job.pages + i * kPageSize;
        ++k.pages;
        if (cfg_.zero_detect && is_zero_page(page)) {
            flush_run();
            const Pfn p = job.pfns[i];
            if (zero_len && wire::extends_run(zero_start, zero_len, p)) {
                ++zero_len;
            } else {
                flush_zeros();
                zero_start = p;
                zero_len = 1;
            }
            ++k.zero_pages;
            if (use_xbzrle) {
                // The destination now holds zeros: a cached older copy must
                // never serve as a delta base again.
                std::lock_guard<std::mutex> l(*cache_locks_[job.channel]);
                caches_[job.channel]->erase(job.pfns[i]);
            }
            continue;
        }
        if (use_xbzrle) {
            std::lock_guard<std::mutex> l(*cache_locks_[job.channel]);
            auto& cache = *caches_[job.channel];
            const std::uint8_t* old = cache.find(job.pfns[i]);
            std::size_t dlen = 0;
            if (old) {
                ++k.xbzrle_hits;
                // The pending run's compressed output goes where the delta
                // would: place it first (and zero pages before it).
                flush_run();
                flush_zeros();
                // A delta above a quarter page is not worth the decode work.
                dlen = codec::xbzrle_encode({old, kPageSize}, {page, kPageSize},
                                            {job.encoded + out_off, job.encoded_size - out_off},
                                            kPageSize / 4);
            } else {
                ++k.xbzrle_misses;
            }
            cache.put(job.pfns[i], {page, kPageSize});
            if (dlen) {
                enc.add(job.pfns[i], wire::PageEncoding::xbzrle, {job.encoded + out_off, dlen});
                out_off += dlen;
                ++k.xbzrle_pages;
                k.xbzrle_bytes += dlen;
                continue;
            }
        }
        if (run_len == 0)
            run_start = i;
        ++run_len;
    }
    flush_run();
    flush_zeros();
    job.iov = enc.finish();
    job.wire_size = enc.wire_size();
}

} // namespace fastmig
