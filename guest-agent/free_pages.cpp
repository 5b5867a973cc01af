#include "guest-agent/free_pages.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <unistd.h>

namespace fastmig::agent {

void RangeBuilder::add(std::uint64_t first, const std::uint64_t* flags, std::size_t n)
{
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint64_t pfn = first + i;
        const bool free = (flags[i] >> kKpfBuddy) & 1;
        if (free && len_ && start_ + len_ == pfn) {
            ++len_;
        } else if (free) {
            if (len_)
                ranges_.push_back({start_, len_});
            start_ = pfn;
            len_ = 1;
        }
    }
}

std::vector<ipc::hints::Range> RangeBuilder::finish()
{
    if (len_)
        ranges_.push_back({start_, len_});
    len_ = 0;
    return std::move(ranges_);
}

std::vector<ipc::hints::Range> scan_kpageflags(int fd, std::uint64_t limit, ScanStats& stats, std::size_t chunk)
{
    std::vector<std::uint64_t> buf(chunk);
    RangeBuilder b;
    std::uint64_t pfn = 0;
    while (pfn < limit) {
        const std::size_t want = std::size_t(std::min<std::uint64_t>(chunk, limit - pfn));
        ssize_t n = ::pread(fd, buf.data(), want * 8, off_t(pfn * 8));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            throw std::runtime_error(std::string("reading /proc/kpageflags at pfn ") + std::to_string(pfn) + ": " +
                                     std::strerror(errno));
        if (n == 0)
            break; // past the last pfn the kernel knows
        const std::size_t words = std::size_t(n) / 8; // the kernel returns whole words
        if (words == 0)
            break;
        b.add(pfn, buf.data(), words);
        stats.bytes_read += std::uint64_t(n);
        stats.pfns += words;
        pfn += words;
    }
    auto r = b.finish();
    for (const auto& x : r)
        stats.free += x.count;
    return r;
}

bool cmdline_poisons_pages(const std::string& cmdline)
{
    // Words of the command line; page_poison=1/on/y turns it on.
    std::size_t i = 0;
    while (i < cmdline.size()) {
        std::size_t j = cmdline.find_first_of(" \t\n", i);
        if (j == std::string::npos)
            j = cmdline.size();
        const std::string w = cmdline.substr(i, j - i);
        if (w == "page_poison=1" || w == "page_poison=on" || w == "page_poison=y")
            return true;
        i = j + 1;
    }
    return false;
}

} // namespace fastmig::agent
