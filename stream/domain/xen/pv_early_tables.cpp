#include "stream/domain/xen/pv_early_tables.hpp"

#include <cstring>
#include <string>

namespace fastmig::xen {

std::vector<Pfn> EarlyTables::to_localise(const PfnTypeMap& types) const
{
    std::lock_guard<std::mutex> l(m_);
    std::vector<Pfn> out;
    for (Pfn p = 0; p < types.size(); ++p)
        if (page_type_level(types.get(p)) && !sent_.count(p))
            out.push_back(p);
    return out;
}

void EarlyTables::keep(Pfn pfn, std::span<const std::uint8_t> sent)
{
    if (sent.size() != kPageSize)
        throw Error("early page table " + std::to_string(pfn) + ": " + std::to_string(sent.size()) +
                    " bytes, not one page");
    auto copy = std::make_unique<std::uint8_t[]>(kPageSize);
    std::memcpy(copy.get(), sent.data(), kPageSize);
    std::lock_guard<std::mutex> l(m_);
    if (!sent_.emplace(pfn, std::move(copy)).second)
        throw Error("early page table " + std::to_string(pfn) + " is already local");
}

void EarlyTables::forget(std::span<const Pfn> pfns)
{
    std::lock_guard<std::mutex> l(m_);
    if (sent_.empty()) // every write of the stream comes here: keep it cheap
        return;
    for (Pfn p : pfns)
        sent_.erase(p);
}

bool EarlyTables::local(Pfn pfn) const
{
    std::lock_guard<std::mutex> l(m_);
    return sent_.count(pfn) != 0;
}

bool EarlyTables::sent_bytes(Pfn pfn, std::span<std::uint8_t> dst) const
{
    std::lock_guard<std::mutex> l(m_);
    auto it = sent_.find(pfn);
    if (it == sent_.end())
        return false;
    if (dst.size() != kPageSize)
        throw Error("early page table " + std::to_string(pfn) + ": a read of " + std::to_string(dst.size()) +
                    " bytes, not one page");
    std::memcpy(dst.data(), it->second.get(), kPageSize);
    return true;
}

std::size_t EarlyTables::size() const
{
    std::lock_guard<std::mutex> l(m_);
    return sent_.size();
}

} // namespace fastmig::xen
