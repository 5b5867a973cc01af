#include "stream/send_pipeline.hpp"

#include "stream/clock.hpp"
#include "stream/transport.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <arpa/inet.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace fastmig {

// A batch of pages (PageBatch), or a control record queued in the channel's
// order instead of pages.
struct SendPipeline::Job : PageBatch {
    using PageBatch::PageBatch;
    std::vector<std::uint8_t> record;
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

SendPipeline::SendPipeline(Domain& dom, std::vector<wire::RecordWriter*> writers, PipelineConfig cfg)
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
    }
    if (cfg_.xbzrle_cache_bytes)
        caches_ = std::make_unique<EncoderCaches>(cfg_.xbzrle_cache_bytes, channels());
    if (cfg_.compression.algorithm != codec::Algorithm::none) {
        gate_.emplace(cfg_.threads);
        // With --max-bandwidth the token bucket is the link, wherever the
        // destination runs.
        same_host_ = cfg_.max_bandwidth <= 0 &&
                     std::all_of(writers_.begin(), writers_.end(), [](auto* w) { return peer_on_this_host(w->fd()); });
    }
    for (unsigned t = 0; t < cfg_.threads; ++t) {
        encoders_.push_back(std::make_unique<PageEncoder>(dom_, cfg_, caches_.get()));
        // Raw until the link is measured (CompressionGate).
        if (gate_)
            encoders_.back()->set_verdict(gate_->verdict().compress(), gate_->verdict().ratio_needed);
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
        // Under m_: drain() tests failed() under it and must not miss the wake-up.
        std::lock_guard<std::mutex> l(m_);
        error_.set(e);
    }
    // Wake every stage: they stop at their next queue operation.
    free_.close();
    work_.close();
    for (auto& q : out_)
        q->close();
    idle_cv_.notify_all();
}

void SendPipeline::submit(Job* job)
{
    {
        std::lock_guard<std::mutex> l(m_);
        ++outstanding_;
    }
    if (!work_.push(job))
        error_.rethrow_if_failed();
}

void SendPipeline::queue(std::vector<Job*>& pending, Pfn pfn, std::uint32_t round, bool free_only)
{
    std::uint32_t c = wire::channel_of(pfn, channels());
    Job*& job = pending[c];
    if (!job) {
        auto j = free_.pop();
        if (!j)
            error_.rethrow_if_failed();
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
        error_.rethrow_if_failed();
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
        error_.rethrow_if_failed();
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
    idle_cv_.wait(l, [&] { return outstanding_ == 0 || error_.failed(); });
    error_.rethrow_if_failed();
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
    for (auto& e : encoders_)
        e->set_verdict(v.compress(), v.ratio_needed);
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
            encoders_[index]->encode(*job);
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

} // namespace fastmig
