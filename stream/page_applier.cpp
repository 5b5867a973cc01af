// PageApplier: see page_applier.hpp.
#include "stream/page_applier.hpp"
#include "stream/checksum.hpp"

#include <array>
#include <cstdio>
#include <string>

namespace fastmig {

void DestinationPages::reset(std::uint64_t nr_pages, bool v)
{
    verify = v;
    seen.resize(nr_pages);
    written.resize(nr_pages);
    if (verify) {
        std::array<std::uint8_t, kPageSize> zero{};
        zero_sum = wire::page_checksum(zero);
        sums.assign(nr_pages, zero_sum);
    }
}

std::optional<std::string> SlowBatchLog::note(std::uint32_t round, std::uint64_t pages, std::uint64_t took_ns,
                                               std::uint64_t now_ns)
{
    if (took_ns < threshold_ns_)
        return std::nullopt;
    if (last_ns_ && now_ns - *last_ns_ < every_ns_) {
        ++left_out_;
        return std::nullopt;
    }
    char line[224];
    std::snprintf(line, sizeof line,
                  "receive: slow page batch: round %u, %llu pages applied in %.1f ms (over %.0f ms: the channel "
                  "stops reading meanwhile, and the source's silence limit counts it)",
                  round, (unsigned long long)pages, double(took_ns) / 1e6, double(threshold_ns_) / 1e6);
    std::string s = line;
    if (left_out_)
        s += "; " + std::to_string(left_out_) + " more slow batches since the last such line";
    last_ns_ = now_ns;
    left_out_ = 0;
    return s;
}

PageApplier::PageApplier(DestinationPages& pages, ChannelCounts& counts, std::uint64_t features)
    : pages_(pages), counts_(counts), features_(features), inflater_(codec::make_decompressor(codec::Algorithm::igzip))
{
}

// A batch whose pfns rise (the order this sender writes) names every page
// once, so it goes in at most four calls: one read of its XBZRLE bases, one
// gathered write of every page with data, one clearing of the zero pages
// that held data, one allocation of the fresh zero pages.  Each call maps
// and unmaps guest memory on Xen, which costs far more than copying a page,
// and the batches of the last round are inside the downtime.  Any other
// batch (not from this sender) goes in descriptor by descriptor, in order,
// so that a later copy of a page wins.
void PageApplier::apply(IncomingDomain& dom, wire::PageBatch& b)
{
    wire::check_batch_features(b, features_);
    const std::size_t n = b.pages.size();
    bool rising = true;
    Pfn next = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const auto& d = b.pages[i];
        const bool run = d.encoding == wire::PageEncoding::zero_run || d.encoding == wire::PageEncoding::free_run;
        if (d.pfn < next)
            rising = false;
        next = d.pfn + (run ? d.length : 1);
    }
    if (rising) {
        apply_descriptors(dom, b, 0, n);
        return;
    }
    for (std::size_t i = 0; i < n;) {
        // A deflate group's pages stay together (one blob).
        const std::size_t len = b.pages[i].encoding == wire::PageEncoding::deflate ? b.group_pages[i] : 1;
        apply_descriptors(dom, b, i, i + len);
        i += len;
    }
}

// A ZERO, FREE or run of them.  A run's length is its page count
// (parse_page_batch checked it stays below nr_pages); a single page is a
// run of one.
void PageApplier::zero_or_free(const wire::PageDesc& d)
{
    const bool run = d.encoding == wire::PageEncoding::zero_run || d.encoding == wire::PageEncoding::free_run;
    const Pfn end = d.pfn + (run ? d.length : 1);
    for (Pfn p = d.pfn; p < end; ++p) {
        if (pages_.written.test(p)) { // holds data: clear it
            pages_.written.clear(p);
            rezero_.push_back(p);
            ++counts_.zeroed;
        } else if (!pages_.seen.test(p)) {
            fresh_.push_back(p);
        }
        pages_.seen.set(p);
        if (pages_.verify)
            pages_.sums[p] = pages_.zero_sum;
    }
}

void PageApplier::put(Pfn pfn, const std::uint8_t* page)
{
    pages_.seen.set(pfn);
    pages_.written.set(pfn);
    ++counts_.written;
    if (pages_.verify)
        pages_.sums[pfn] = wire::page_checksum({page, kPageSize});
    pfns_.push_back(pfn);
    srcs_.push_back(page);
}

// Descriptors [lo, hi) of a batch, no pfn named twice among them.
void PageApplier::apply_descriptors(IncomingDomain& dom, wire::PageBatch& b, std::size_t lo, std::size_t hi)
{
    bases_.clear();
    std::size_t inflated = 0;
    for (std::size_t i = lo; i < hi; ++i) {
        if (b.pages[i].encoding == wire::PageEncoding::xbzrle)
            bases_.push_back(b.pages[i].pfn);
        else if (b.pages[i].encoding == wire::PageEncoding::deflate)
            inflated += b.group_pages[i]; // validated: 1..kMaxGroupPages, continuations follow
    }
    buf_.resize((bases_.size() + inflated) * kPageSize);
    std::uint8_t* xb = buf_.data();
    std::uint8_t* db = buf_.data() + bases_.size() * kPageSize;
    if (!bases_.empty()) {
        // A delta applies to the page as this destination holds it: the
        // copy the source sent last (one channel per pfn keeps the order).
        dom.read_pages(bases_, {xb, bases_.size() * kPageSize});
        ++counts_.domain_calls;
    }
    pfns_.clear();
    srcs_.clear();
    rezero_.clear();
    fresh_.clear();
    for (std::size_t i = lo; i < hi;) {
        const auto& d = b.pages[i];
        switch (d.encoding) {
        case wire::PageEncoding::zero:
        case wire::PageEncoding::free:
        case wire::PageEncoding::zero_run:
        case wire::PageEncoding::free_run: zero_or_free(d); ++i; break;
        case wire::PageEncoding::raw:
            put(d.pfn, b.data[i].data());
            ++i;
            break;
        case wire::PageEncoding::deflate: {
            const std::size_t g = b.group_pages[i];
            inflater_->decompress(b.data[i], {db, g * kPageSize});
            for (std::size_t j = 0; j < g; ++j)
                put(b.pages[i + j].pfn, db + j * kPageSize);
            db += g * kPageSize;
            counts_.deflate += g;
            i += g;
            break;
        }
        case wire::PageEncoding::xbzrle:
            codec::xbzrle_decode(b.data[i], {xb, kPageSize});
            put(d.pfn, xb);
            xb += kPageSize;
            ++counts_.xbzrle;
            ++i;
            break;
        default:
            throw StreamError("page encoding " + std::to_string(unsigned(d.encoding)) + " is not supported");
        }
    }
    call_domain(dom);
}

// The gathered write, then the clearings, as the batch left them.
void PageApplier::call_domain(IncomingDomain& dom)
{
    if (!pfns_.empty()) {
        dom.write_pages_gather(pfns_, srcs_);
        ++counts_.domain_calls;
    }
    if (!rezero_.empty()) {
        dom.zero_pages(rezero_);
        ++counts_.domain_calls;
    }
    if (!fresh_.empty()) {
        dom.zero_fresh_pages(fresh_);
        ++counts_.domain_calls;
    }
}

} // namespace fastmig
