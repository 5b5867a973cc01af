// Progress of a restore, for xenopsd's `info:` lines (docs/emu-manager.md).
//
// The receiver has no progress callback of its own, and the destination
// does not know how many bytes the stream will carry; what it does know is
// the guest's size (the stream header) and which pages have arrived.  So
// the figure is the share of the guest's pages written (or named zero or
// free) at least once: the first round of a live migration moves it from 0
// to nearly 100, later rounds only re-send pages already counted.  Pages
// that never arrive (an HVM guest's MMIO holes) keep it below 100; the
// drop-in sends 100 itself with the result.
//
// ProgressProvider wraps the backend's provider; the domains it creates
// forward every call to the backend's and count pages on the way.  The
// appliers of several channels write at once, so the count is an atomic
// bitmap, and the report is rate-limited across them: at most one call per
// interval, whichever thread comes first.
#pragma once

#include "stream/domain.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

namespace fastmig::emu {

// Which pages have arrived at least once; safe from several threads.
class PageArrivals {
public:
    explicit PageArrivals(std::uint64_t nr_pages);
    // Marks the pages; returns how many have arrived in all.  A pfn at or
    // beyond nr_pages is ignored (the receiver refuses those before they
    // reach a domain; counting them would overflow the bitmap).
    std::uint64_t mark(std::span<const Pfn> pfns);
    std::uint64_t arrived() const { return arrived_.load(std::memory_order_relaxed); }
    std::uint64_t nr_pages() const { return nr_pages_; }
    // 0..99: the result's own 100 is the drop-in's to send.
    unsigned percent() const;

private:
    std::uint64_t nr_pages_;
    std::vector<std::atomic<std::uint64_t>> words_;
    std::atomic<std::uint64_t> arrived_{0};
};

// At most one `due` answer per interval, from any thread; the first call is
// due.  Interval 0: every call is due.
class RateLimit {
public:
    explicit RateLimit(std::chrono::milliseconds interval) : interval_ns_(interval.count() * 1000000) {}
    bool due(std::int64_t now_ns);

private:
    std::int64_t interval_ns_;
    std::atomic<std::int64_t> next_ns_{INT64_MIN};
};

class ProgressProvider : public DomainProvider {
public:
    using Report = std::function<void(unsigned percent)>; // must not throw
    ProgressProvider(DomainProvider& inner, std::chrono::milliseconds interval, Report report)
        : inner_(inner), limit_(interval), report_(std::move(report))
    {
    }
    void check_capacity(std::uint64_t nr_pages, std::uint32_t kind, const std::string& source_name) override
    {
        inner_.check_capacity(nr_pages, kind, source_name);
    }
    std::unique_ptr<IncomingDomain> create(std::uint64_t nr_pages, std::uint32_t kind,
                                           const std::string& source_name) override;

    // The backend's domain inside one this provider created (the receiver
    // hands its callbacks the wrapper; the backend wants its own).
    static IncomingDomain& backend_domain(IncomingDomain& d);

private:
    DomainProvider& inner_;
    RateLimit limit_;
    Report report_;
};

} // namespace fastmig::emu
