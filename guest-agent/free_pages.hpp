// Finding a Linux guest's free page frames from /proc/kpageflags: one
// 64-bit flag word per pfn; KPF_BUDDY (bit 10) marks every page that lies
// in the buddy allocator's free lists, the head of a free block and its
// tail pages (on Linux 6.18 the count matches /proc/buddyinfo's: see
// guest-agent/README.md).  Those pages' content is moot to the guest, so
// dom0 may skip them (evtchn-ipc/README.md).
//
// Pure apart from pread on an fd the caller opened, so the range building
// is tested on a synthetic file (tests/unit/test_guest_agent.cpp).
#pragma once

#include "evtchn-ipc/free_hints.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace fastmig::agent {

constexpr unsigned kKpfBuddy = 10;
constexpr unsigned kKpfNopage = 20;

struct ScanStats {
    std::uint64_t pfns = 0;      // flag words read
    std::uint64_t free = 0;      // pages found free
    std::uint64_t bytes_read = 0;
};

// Coalesces free pfns, fed in ascending order, into ranges.
class RangeBuilder {
public:
    // Flags of pfns [first, first + flags.size()).  Calls must not go back.
    void add(std::uint64_t first, const std::uint64_t* flags, std::size_t n);
    // The ranges found (the open one closed).
    std::vector<ipc::hints::Range> finish();

private:
    std::vector<ipc::hints::Range> ranges_;
    std::uint64_t start_ = 0, len_ = 0; // the open range
};

// Pfns [first, first + count): where the guest has RAM.
struct PfnSpan {
    std::uint64_t first = 0, count = 0;
};

// The whole pages of the top-level "System RAM" lines of /proc/iomem's
// text, ascending and clipped to [0, limit).  Empty when there are none or
// when the kernel hid the addresses (read without root: all zero); the
// caller then scans every pfn.  Why: a PVH or HVM guest's pfn space runs to
// 4 GiB and beyond through MMIO holes (1044480 pfns for 131072 of RAM in a
// 512 MiB PVH guest), and reading their flag words took 8 s of the 10 s dom0
// waits.  A malformed line is skipped, never trusted.
std::vector<PfnSpan> ram_spans_from_iomem(const std::string& text, std::uint64_t limit);

// Reads the flags of pfns [0, limit) (or to the end of the file, whichever
// comes first) from `fd` in chunks of `chunk` pfns.  Throws std::runtime_error
// on a read error.
std::vector<ipc::hints::Range> scan_kpageflags(int fd, std::uint64_t limit, ScanStats& stats,
                                          std::size_t chunk = 64 * 1024);

// The same over the given spans only (ascending, not overlapping).
std::vector<ipc::hints::Range> scan_kpageflags(int fd, const std::vector<PfnSpan>& spans, ScanStats& stats,
                                          std::size_t chunk = 64 * 1024);

// True when the kernel command line turns on page poisoning (the kernel
// would then find zeros where it wrote its poison and report corruption).
bool cmdline_poisons_pages(const std::string& cmdline);

} // namespace fastmig::agent
