// PageMemory: a page-aligned buffer straight from mmap, backed by transparent
// huge pages where the kernel allows them (MADV_HUGEPAGE).
//
// Why not new[] or aligned_alloc: the pipeline's job buffers and the XBZRLE
// cache are tens of MiB, and on the hosts (and VMs) we measured, faulting in
// anonymous memory 4 KiB at a time runs at 0.5-0.7 GB/s: a 64 MiB cache
// zeroed with std::vector cost ~100 ms of a 500 ms migration before the first
// page was sent.  Untouched mmap memory costs nothing until it is used, and a
// 2 MiB huge page is one fault instead of 512.
#pragma once

#include "stream/types.hpp"

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include <sys/mman.h>

namespace fastmig {

class PageMemory {
public:
    PageMemory() = default;
    // Reserves `bytes` (rounded up to 4 KiB) of zero-filled memory; nothing
    // is faulted in until it is written.  Throws Error when mmap fails.
    explicit PageMemory(std::size_t bytes);
    ~PageMemory();
    PageMemory(PageMemory&& o) noexcept : data_(o.data_), size_(o.size_)
    {
        o.data_ = nullptr;
        o.size_ = 0;
    }
    PageMemory& operator=(PageMemory&& o) noexcept;
    PageMemory(const PageMemory&) = delete;
    PageMemory& operator=(const PageMemory&) = delete;

    std::uint8_t* data() const { return data_; }
    std::size_t size() const { return size_; }

private:
    std::uint8_t* data_ = nullptr;
    std::size_t size_ = 0;
};

inline PageMemory::PageMemory(std::size_t bytes)
{
    if (bytes == 0)
        return;
    constexpr std::size_t kHuge = std::size_t{2} << 20;
    const std::size_t len = (bytes + kPageSize - 1) / kPageSize * kPageSize;
    // A huge page needs a 2 MiB-aligned 2 MiB range: reserve 2 MiB more and
    // give back the unaligned head and tail.
    const std::size_t slack = len >= kHuge ? kHuge : 0;
    void* p = ::mmap(nullptr, len + slack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        throw Error("cannot reserve " + std::to_string(len >> 10) + " KiB of buffer memory: " + std::strerror(errno));
    auto* base = static_cast<std::uint8_t*>(p);
    if (slack) {
        const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(base);
        const std::size_t head = ((a + kHuge - 1) & ~(kHuge - 1)) - a;
        if (head)
            ::munmap(base, head);
        if (slack - head)
            ::munmap(base + head + len, slack - head);
        base += head;
    }
    // Advisory: a kernel without THP (or with it off) still gives 4 KiB pages.
    (void)::madvise(base, len, MADV_HUGEPAGE);
    data_ = base;
    size_ = len;
}

inline PageMemory::~PageMemory()
{
    if (data_)
        ::munmap(data_, size_);
}

inline PageMemory& PageMemory::operator=(PageMemory&& o) noexcept
{
    if (this != &o) {
        if (data_)
            ::munmap(data_, size_);
        data_ = o.data_;
        size_ = o.size_;
        o.data_ = nullptr;
        o.size_ = 0;
    }
    return *this;
}

} // namespace fastmig
