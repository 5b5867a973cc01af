// PageCache: the source's copies of pages as last sent, for XBZRLE.
//
// Layout: one contiguous array of `capacity` 4 KiB slots (allocated once, so
// the cache never allocates after construction), a per-slot record (pfn,
// referenced bit) and a hash map pfn -> slot reserved for `capacity`
// entries.  find, put and erase are O(1) on average.
//
// Eviction: CLOCK (second chance).  A hit sets the slot's referenced bit;
// when a new pfn needs a slot and none is free, the hand sweeps the slots,
// clearing referenced bits, and evicts the first slot found unreferenced.
// This keeps the pages that are re-dirtied and re-sent (the hot set XBZRLE
// is for: DPDK mbufs, counters) and recycles pages sent once in round 0 and
// never again, at the cost of one bit per slot, and the sweep is amortised
// O(1): each step either evicts or clears a bit set by an earlier hit.
#include "stream/codec/codec.hpp"
#include "stream/page_memory.hpp"

#include <cstring>
#include <unordered_map>
#include <vector>

namespace fastmig::codec {

struct PageCache::Impl {
    struct Slot {
        Pfn pfn = 0;
        bool used = false;
        bool referenced = false;
    };
    std::size_t capacity = 0;
    PageMemory data; // capacity * kPageSize, faulted in as slots fill
    std::vector<Slot> slots;
    std::vector<std::uint32_t> free_slots;
    std::unordered_map<Pfn, std::uint32_t> index;
    std::size_t hand = 0;
    std::uint64_t hits = 0, misses = 0;

    std::uint32_t victim()
    {
        for (;;) {
            Slot& s = slots[hand];
            const auto i = static_cast<std::uint32_t>(hand);
            hand = hand + 1 == capacity ? 0 : hand + 1;
            if (!s.referenced) {
                index.erase(s.pfn);
                s.used = false;
                return i;
            }
            s.referenced = false;
        }
    }
};

PageCache::PageCache(std::size_t bytes) : impl_(std::make_unique<Impl>())
{
    Impl& m = *impl_;
    m.capacity = bytes / kPageSize;
    // Slot numbers are u32: 16 TiB of cache is far beyond any real use.
    if (m.capacity > 0xffffffffu)
        throw Error("xbzrle cache of " + std::to_string(bytes) + " bytes is too large");
    m.data = PageMemory(m.capacity * kPageSize);
    m.slots.resize(m.capacity);
    m.free_slots.reserve(m.capacity);
    for (std::size_t i = m.capacity; i > 0; --i)
        m.free_slots.push_back(static_cast<std::uint32_t>(i - 1));
    m.index.reserve(m.capacity);
}

PageCache::~PageCache() = default;

const std::uint8_t* PageCache::find(Pfn pfn) const
{
    Impl& m = *impl_;
    const auto it = m.index.find(pfn);
    if (it == m.index.end()) {
        ++m.misses;
        return nullptr;
    }
    ++m.hits;
    m.slots[it->second].referenced = true;
    return m.data.data() + std::size_t{it->second} * kPageSize;
}

void PageCache::put(Pfn pfn, std::span<const std::uint8_t> page)
{
    Impl& m = *impl_;
    if (page.size() != kPageSize)
        throw Error("PageCache::put: page must be " + std::to_string(kPageSize) + " bytes");
    if (m.capacity == 0)
        return;
    std::uint32_t slot;
    const auto it = m.index.find(pfn);
    if (it != m.index.end()) {
        slot = it->second;
    } else {
        if (!m.free_slots.empty()) {
            slot = m.free_slots.back();
            m.free_slots.pop_back();
        } else {
            slot = m.victim();
        }
        m.index.emplace(pfn, slot);
        // A new entry starts unreferenced: it earns its second chance by a
        // hit, so a stream of pages sent once cannot flush the hot set.
        m.slots[slot] = {pfn, true, false};
    }
    std::memcpy(m.data.data() + std::size_t{slot} * kPageSize, page.data(), kPageSize);
}

void PageCache::erase(Pfn pfn)
{
    Impl& m = *impl_;
    const auto it = m.index.find(pfn);
    if (it == m.index.end())
        return;
    m.slots[it->second] = {};
    m.free_slots.push_back(it->second);
    m.index.erase(it);
}

std::size_t PageCache::capacity_pages() const { return impl_->capacity; }
std::uint64_t PageCache::hits() const { return impl_->hits; }
std::uint64_t PageCache::misses() const { return impl_->misses; }

} // namespace fastmig::codec
