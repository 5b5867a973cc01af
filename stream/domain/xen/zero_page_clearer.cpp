#include "stream/domain/xen/zero_page_clearer.hpp"

#include "stream/clock.hpp"
#include "stream/types.hpp"

namespace fastmig::xen {

ZeroPageClearer::ZeroPageClearer(std::uint64_t nr_pfns, ClearFn clear, std::size_t chunk)
    : pages_(nr_pfns), clear_(std::move(clear)), chunk_(chunk ? chunk : 1)
{
}

ZeroPageClearer::~ZeroPageClearer() { stop(); }

ZeroPageClearer::Turn::Turn(ZeroPageClearer& c) : c_(c) { ++c_.in_applier_; }

ZeroPageClearer::Turn::~Turn()
{
    if (--c_.in_applier_ == 0) {
        std::lock_guard<std::mutex> l(c_.m_);
        c_.cv_.notify_all();
    }
}

void ZeroPageClearer::add(std::span<const Pfn> pfns)
{
    rethrow();
    {
        Turn t(*this);
        pages_.add(pfns);
    }
    std::lock_guard<std::mutex> l(m_);
    if (drained_)
        throw Error("internal: zero pages named after the clearer was drained");
    if (!thread_.joinable() && !stop_)
        thread_ = std::thread([this] {
            name_this_thread("fm-clear");
            run();
        });
    cv_.notify_all();
}

void ZeroPageClearer::written(std::span<const Pfn> pfns)
{
    rethrow();
    Turn t(*this);
    pages_.written(pfns);
}

void ZeroPageClearer::settle(std::span<const Pfn> pfns)
{
    rethrow();
    Turn t(*this);
    pages_.settle(pfns, clear_);
}

void ZeroPageClearer::run()
{
    for (;;) {
        {
            std::unique_lock<std::mutex> l(m_);
            cv_.wait(l, [&] { return stop_ || (!error_ && in_applier_ == 0 && pages_.count() > 0); });
            if (stop_)
                return;
        }
        try {
            background_ += pages_.resolve_next(chunk_, clear_);
        } catch (...) {
            std::lock_guard<std::mutex> l(m_);
            if (!error_)
                error_ = std::current_exception();
        }
    }
}

void ZeroPageClearer::rethrow()
{
    std::lock_guard<std::mutex> l(m_);
    if (error_)
        std::rethrow_exception(error_);
}

void ZeroPageClearer::stop()
{
    {
        std::lock_guard<std::mutex> l(m_);
        stop_ = true;
        cv_.notify_all();
    }
    if (thread_.joinable())
        thread_.join();
}

ZeroPageClearer::Drained ZeroPageClearer::drain()
{
    const std::uint64_t t0 = monotonic_ns();
    stop();
    {
        std::lock_guard<std::mutex> l(m_);
        drained_ = true;
    }
    rethrow();
    Drained d;
    d.background = background_;
    while (std::size_t n = pages_.resolve_next(chunk_, clear_))
        d.at_end += n;
    d.ns = monotonic_ns() - t0;
    return d;
}

} // namespace fastmig::xen
