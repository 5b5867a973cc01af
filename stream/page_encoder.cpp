#include "stream/page_encoder.hpp"

#include "stream/clock.hpp"

#include <algorithm>

#include <isa-l/mem_routines.h>

namespace fastmig {

namespace {

// ISA-L's zero test dispatches to the widest vector unit at run time.
bool is_zero_page(const std::uint8_t* page)
{
    return isal_zero_detect(const_cast<std::uint8_t*>(page), kPageSize) == 0;
}

} // namespace

PageBatch::PageBatch(std::uint32_t batch_pages)
    : memory(std::size_t{batch_pages} * kPageSize + std::size_t{batch_pages} * wire::kMaxEncodedPage),
      pages(memory.data()), encoded(memory.data() + std::size_t{batch_pages} * kPageSize),
      encoded_size(std::size_t{batch_pages} * wire::kMaxEncodedPage)
{
    pfns.reserve(batch_pages);
}

EncoderCaches::EncoderCaches(std::size_t bytes, unsigned channels)
{
    for (unsigned c = 0; c < channels; ++c)
        channels_.push_back(std::make_unique<PerChannel>(bytes / channels));
}

EncoderCaches::Locked EncoderCaches::lock(std::uint32_t channel)
{
    PerChannel& pc = *channels_[channel];
    return {std::unique_lock<std::mutex>(pc.lock), pc.cache};
}

PageEncoder::PageEncoder(Domain& dom, const PipelineConfig& cfg, EncoderCaches* caches)
    : dom_(dom), zero_detect_(cfg.zero_detect), algorithm_(cfg.compression.algorithm), caches_(caches)
{
    if (algorithm_ != codec::Algorithm::none)
        policy_.emplace(cfg.compression, dom_.nr_pages());
}

void PageEncoder::set_verdict(bool compress, double ratio_needed)
{
    std::lock_guard<std::mutex> l(policy_lock_);
    if (policy_)
        policy_->set_verdict(compress, ratio_needed);
}

void PageEncoder::encode(PageBatch& b)
{
    b.encoder.begin(b.round);
    if (b.free_only)
        encode_free(b);
    else
        encode_data(b);
    b.iov = b.encoder.finish();
    b.wire_size = b.encoder.wire_size();
}

void PageEncoder::encode_free(PageBatch& b)
{
    const std::size_t n = b.pfns.size();
    // Free pages come in pfn order: consecutive ones go as FREE_RUNs.
    for (std::size_t i = 0; i < n;) {
        std::size_t j = i + 1;
        while (j < n && wire::extends_run(b.pfns[i], j - i, b.pfns[j]))
            ++j;
        b.encoder.add_run(b.pfns[i], static_cast<std::uint32_t>(j - i), wire::PageEncoding::free);
        i = j;
    }
    b.counts.pages += n;
    b.counts.free_pages += n;
}

// One encode_data() call: where it is in the batch, and what waits to be
// placed.  Zero pages wait as one run (they precede any pending data page,
// so they are placed first); consecutive data pages wait to be grouped.
struct PageEncoder::Pass {
    PageBatch& b;
    std::size_t out_off = 0; // used bytes of b.encoded
    Pfn zero_start = 0;
    std::uint32_t zero_len = 0;
    std::size_t run_start = 0, run_len = 0; // indices into b.pfns

    const std::uint8_t* page(std::size_t i) const { return b.pages + i * kPageSize; }
    std::span<std::uint8_t> free_output() const { return {b.encoded + out_off, b.encoded_size - out_off}; }
};

void PageEncoder::encode_data(PageBatch& b)
{
    const std::size_t n = b.pfns.size();
    // A copy, not a view of guest memory: the record's CRC covers the page
    // bytes and a running guest may write a page between the CRC and the
    // send, which would fail the whole record at the destination (a torn
    // page in a copy is harmless: the dirty log sends it again).  Cheaper
    // snapshots were weighed for issue 16: a mapping of the sim's memfd
    // costs 5-10x a pread here (page-table updates; see sim_domain.cpp), and
    // in a perf profile of a raw send this read is ~20% of the sender's CPU
    // while the destination, not the source, is the bottleneck.
    dom_.read_pages(b.pfns, {b.pages, n * kPageSize});
    const bool use_xbzrle = caches_ && b.round >= 1;
    Pass s{b};
    for (std::size_t i = 0; i < n; ++i) {
        ++b.counts.pages;
        if (zero_detect_ && is_zero_page(s.page(i))) {
            flush_run(s);
            const Pfn p = b.pfns[i];
            if (s.zero_len && wire::extends_run(s.zero_start, s.zero_len, p)) {
                ++s.zero_len;
            } else {
                flush_zeros(s);
                s.zero_start = p;
                s.zero_len = 1;
            }
            ++b.counts.zero_pages;
            if (use_xbzrle) {
                // The destination now holds zeros: a cached older copy must
                // never serve as a delta base again.
                caches_->lock(b.channel).cache.erase(p);
            }
            continue;
        }
        if (use_xbzrle && send_as_delta(s, i))
            continue;
        if (s.run_len == 0)
            s.run_start = i;
        ++s.run_len;
    }
    flush_run(s);
    flush_zeros(s);
}

// Page i as an XBZRLE delta against its cached copy, if it has one and the
// delta is small; either way the cache holds page i afterwards.
bool PageEncoder::send_as_delta(Pass& s, std::size_t i)
{
    PageBatch& b = s.b;
    auto locked = caches_->lock(b.channel);
    auto& cache = locked.cache;
    const std::uint8_t* old = cache.find(b.pfns[i]);
    std::size_t dlen = 0;
    if (old) {
        ++b.counts.xbzrle_hits;
        // The pending run's compressed output goes where the delta would:
        // place it first (and zero pages before it).
        flush_run(s);
        flush_zeros(s);
        // A delta above a quarter page is not worth the decode work.
        dlen = codec::xbzrle_encode({old, kPageSize}, {s.page(i), kPageSize}, s.free_output(), kPageSize / 4);
    } else {
        ++b.counts.xbzrle_misses;
    }
    cache.put(b.pfns[i], {s.page(i), kPageSize});
    if (!dlen)
        return false;
    b.encoder.add(b.pfns[i], wire::PageEncoding::xbzrle, {b.encoded + s.out_off, dlen});
    s.out_off += dlen;
    ++b.counts.xbzrle_pages;
    b.counts.xbzrle_bytes += dlen;
    return true;
}

void PageEncoder::flush_zeros(Pass& s)
{
    if (s.zero_len)
        s.b.encoder.add_run(s.zero_start, s.zero_len, wire::PageEncoding::zero);
    s.zero_len = 0;
}

// The pending data pages, in groups of up to kMaxGroupPages: each group
// deflated if its region compresses and it saves enough, raw otherwise.
void PageEncoder::flush_run(Pass& s)
{
    if (s.run_len)
        flush_zeros(s);
    PageBatch& b = s.b;
    std::size_t i = s.run_start;
    while (s.run_len > 0) {
        const std::size_t g = std::min<std::size_t>(s.run_len, wire::kMaxGroupPages);
        const std::size_t clen = compress_group(s, i, g);
        if (clen) {
            b.encoder.add_group({b.pfns.data() + i, g}, {b.encoded + s.out_off, clen});
            s.out_off += clen;
            b.counts.deflate_pages += g;
            b.counts.deflate_out += clen;
        } else {
            for (std::size_t p = i; p < i + g; ++p)
                b.encoder.add(b.pfns[p], wire::PageEncoding::raw, {s.page(p), kPageSize});
            b.counts.raw_pages += g;
        }
        i += g;
        s.run_len -= g;
    }
}

// Deflates pages [first, first + pages) into the free output; returns the
// compressed length, or 0 (send raw) when the policy says no or it did not
// save enough.
std::size_t PageEncoder::compress_group(Pass& s, std::size_t first, std::size_t pages)
{
    if (!policy_)
        return 0;
    PageBatch& b = s.b;
    std::span<const std::uint8_t> data(s.page(first), pages * kPageSize);
    {
        std::lock_guard<std::mutex> l(policy_lock_);
        if (!policy_->should_compress(b.pfns[first], data))
            return 0;
    }
    Stopwatch sw;
    if (!compressor_)
        compressor_ = codec::make_compressor(algorithm_);
    // Worth it only if it saves at least 1/16 of the bytes.
    const std::size_t clen = compressor_->compress(data, s.free_output(), data.size() - data.size() / 16);
    b.counts.compress_ns += std::uint64_t(sw.seconds() * 1e9);
    b.counts.deflate_in += data.size();
    std::lock_guard<std::mutex> l(policy_lock_);
    policy_->record(b.pfns[first], data.size(), clen ? clen : data.size());
    return clen;
}

} // namespace fastmig
