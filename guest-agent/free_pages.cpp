#include "guest-agent/free_pages.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
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

namespace {

// Calls f on each piece of text between any of the separators in seps.
template <class F> void for_each_piece(const std::string& text, const char* seps, F f)
{
    std::size_t i = 0;
    while (i < text.size()) {
        std::size_t j = text.find_first_of(seps, i);
        if (j == std::string::npos)
            j = text.size();
        f(text.substr(i, j - i));
        i = j + 1;
    }
}

// Adds the flags of pfns [span.first, span.first + span.count) to b; false
// when the file ended inside the span (no pfn beyond it exists).
bool scan_span(int fd, PfnSpan span, RangeBuilder& b, std::vector<std::uint64_t>& buf, ScanStats& stats)
{
    std::uint64_t pfn = span.first;
    const std::uint64_t end = span.first + span.count;
    while (pfn < end) {
        const std::size_t want = std::size_t(std::min<std::uint64_t>(buf.size(), end - pfn));
        ssize_t n = ::pread(fd, buf.data(), want * 8, off_t(pfn * 8));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            throw std::runtime_error(std::string("reading /proc/kpageflags at pfn ") + std::to_string(pfn) + ": " +
                                     std::strerror(errno));
        const std::size_t words = std::size_t(n) / 8; // the kernel returns whole words
        if (words == 0)
            return false; // past the last pfn the kernel knows
        b.add(pfn, buf.data(), words);
        stats.bytes_read += std::uint64_t(n);
        stats.pfns += words;
        pfn += words;
    }
    return true;
}

} // namespace

std::vector<ipc::hints::Range> scan_kpageflags(int fd, const std::vector<PfnSpan>& spans, ScanStats& stats,
                                               std::size_t chunk)
{
    std::vector<std::uint64_t> buf(chunk ? chunk : 1);
    RangeBuilder b;
    for (const PfnSpan& s : spans)
        if (!scan_span(fd, s, b, buf, stats))
            break;
    auto r = b.finish();
    for (const auto& x : r)
        stats.free += x.count;
    return r;
}

std::vector<ipc::hints::Range> scan_kpageflags(int fd, std::uint64_t limit, ScanStats& stats, std::size_t chunk)
{
    return scan_kpageflags(fd, std::vector<PfnSpan>{{0, limit}}, stats, chunk);
}

std::vector<PfnSpan> ram_spans_from_iomem(const std::string& text, std::uint64_t limit)
{
    constexpr std::uint64_t kPage = 4096;
    std::vector<PfnSpan> out;
    for_each_piece(text, "\n", [&](const std::string& line) {
        // Top level only: nested lines (indented) are parts of a range.
        if (line.empty() || line[0] == ' ')
            return;
        unsigned long long start = 0, end = 0;
        int name_at = -1;
        if (std::sscanf(line.c_str(), "%llx-%llx : %n", &start, &end, &name_at) != 2 || name_at < 0)
            return;
        if (line.compare(std::size_t(name_at), std::string::npos, "System RAM") != 0 || end < start)
            return;
        const std::uint64_t first = (std::uint64_t(start) + kPage - 1) / kPage; // whole pages only
        const std::uint64_t last = end == ~0ull ? end / kPage : (std::uint64_t(end) + 1) / kPage;
        if (last <= first || first >= limit || (!out.empty() && first < out.back().first + out.back().count))
            return; // empty, beyond dom0's count, or out of order: skipped
        out.push_back({first, std::min(last, limit) - first});
    });
    return out; // hidden addresses (0-0) hold no whole page: none
}

bool cmdline_poisons_pages(const std::string& cmdline)
{
    // Words of the command line; page_poison=1/on/y turns it on.
    bool on = false;
    for_each_piece(cmdline, " \t\n", [&](const std::string& w) {
        on = on || w == "page_poison=1" || w == "page_poison=on" || w == "page_poison=y";
    });
    return on;
}

} // namespace fastmig::agent
