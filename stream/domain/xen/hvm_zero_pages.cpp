#include "stream/domain/xen/hvm_zero_pages.hpp"

#include "stream/domain/xen/bytes.hpp"

#include <algorithm>

namespace fastmig::xen {

void WaitingZeroPages::add(std::span<const Pfn> pfns)
{
    std::lock_guard<std::mutex> g(m_);
    for (Pfn p : pfns)
        if (p >= waiting_.size())
            throw Error("zero page at gfn " + hex(p) + " beyond the guest's " + std::to_string(waiting_.size()) +
                        " pages");
    for (Pfn p : pfns) {
        if (waiting_[p])
            continue;
        waiting_[p] = 1;
        ++count_;
        cursor_ = std::min(cursor_, p);
    }
}

void WaitingZeroPages::written(std::span<const Pfn> pfns)
{
    std::lock_guard<std::mutex> g(m_);
    for (Pfn p : pfns)
        if (p < waiting_.size() && waiting_[p]) {
            waiting_[p] = 0;
            --count_;
        }
}

std::uint64_t WaitingZeroPages::count() const
{
    std::lock_guard<std::mutex> g(m_);
    return count_;
}

} // namespace fastmig::xen
