#include "libxl-plugin/restore_progress.hpp"

#include <algorithm>
#include <time.h>

namespace fastmig::emu {

PageArrivals::PageArrivals(std::uint64_t nr_pages) : nr_pages_(nr_pages), words_((nr_pages + 63) / 64) {}

std::uint64_t PageArrivals::mark(std::span<const Pfn> pfns)
{
    std::uint64_t fresh = 0;
    for (Pfn p : pfns) {
        if (p >= nr_pages_)
            continue;
        const std::uint64_t bit = std::uint64_t(1) << (p % 64);
        if (!(words_[p / 64].fetch_or(bit, std::memory_order_relaxed) & bit))
            ++fresh;
    }
    return arrived_.fetch_add(fresh, std::memory_order_relaxed) + fresh;
}

unsigned PageArrivals::percent() const
{
    if (nr_pages_ == 0)
        return 0;
    return unsigned(std::min<std::uint64_t>(99, arrived() * 100 / nr_pages_));
}

bool RateLimit::due(std::int64_t now_ns)
{
    std::int64_t next = next_ns_.load(std::memory_order_relaxed);
    if (now_ns < next)
        return false;
    // Another thread may have taken this turn: only one wins it.
    return next_ns_.compare_exchange_strong(next, now_ns + interval_ns_, std::memory_order_relaxed);
}

namespace {

std::int64_t monotonic_ns()
{
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Forwards every call to the backend's domain (a call added to
// IncomingDomain must be added here too, or the backend's override would be
// skipped for the default) and counts the pages that arrive.
class ProgressDomain : public IncomingDomain {
public:
    ProgressDomain(std::unique_ptr<IncomingDomain> inner, RateLimit& limit, const ProgressProvider::Report& report)
        : d_(std::move(inner)), arrivals_(d_->nr_pages()), limit_(limit), report_(report)
    {
    }

    IncomingDomain& backend() { return *d_; }

    std::string name() const override { return d_->name(); }
    std::uint64_t nr_pages() const override { return d_->nr_pages(); }
    void write_pages(std::span<const Pfn> pfns, std::span<const std::uint8_t> src) override
    {
        d_->write_pages(pfns, src);
        arrived(pfns);
    }
    void write_pages_gather(std::span<const Pfn> pfns, std::span<const std::uint8_t* const> srcs) override
    {
        d_->write_pages_gather(pfns, srcs);
        arrived(pfns);
    }
    // Pages that held data: counted when they arrived.
    void zero_pages(std::span<const Pfn> pfns) override { d_->zero_pages(pfns); }
    void zero_fresh_pages(std::span<const Pfn> pfns) override
    {
        d_->zero_fresh_pages(pfns);
        arrived(pfns);
    }
    void read_page(Pfn pfn, std::span<std::uint8_t> dst) override { d_->read_page(pfn, dst); }
    void read_pages(std::span<const Pfn> pfns, std::span<std::uint8_t> dst) override { d_->read_pages(pfns, dst); }
    void early_state(const StateBlob& b) override { d_->early_state(b); }
    void restore_state(const std::vector<StateBlob>& state) override { d_->restore_state(state); }
    void unpause() override { d_->unpause(); }
    void set_orphan_policy(OrphanPolicy p) override { d_->set_orphan_policy(p); }
    DomainClock clock() const override { return d_->clock(); }
    void destroy() override { d_->destroy(); }

private:
    void arrived(std::span<const Pfn> pfns)
    {
        arrivals_.mark(pfns);
        if (limit_.due(monotonic_ns()))
            report_(arrivals_.percent());
    }

    std::unique_ptr<IncomingDomain> d_;
    PageArrivals arrivals_;
    RateLimit& limit_;
    const ProgressProvider::Report& report_;
};

} // namespace

std::unique_ptr<IncomingDomain> ProgressProvider::create(std::uint64_t nr_pages, std::uint32_t kind,
                                                         const std::string& source_name)
{
    return std::make_unique<ProgressDomain>(inner_.create(nr_pages, kind, source_name), limit_, report_);
}

IncomingDomain& ProgressProvider::backend_domain(IncomingDomain& d)
{
    auto* p = dynamic_cast<ProgressDomain*>(&d);
    return p ? p->backend() : d;
}

} // namespace fastmig::emu
