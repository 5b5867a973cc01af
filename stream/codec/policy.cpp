// Selective compression: entropy probe, CompressionPolicy and CompressionGate.
#include "stream/codec/codec.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

namespace fastmig::codec {

namespace {

// The probe reads 16 chunks of 64 bytes spread evenly over the page (1 KiB,
// a quarter of it): contiguous chunks keep the loads cheap, the spread
// catches pages that are half text, half random.  1 KiB and not 256 bytes
// because the plug-in estimate of entropy is biased low by about
// 255 / (2 N ln 2) bits for N samples of uniform bytes: random data reads
// 7.3 bits/byte from 256 samples (too close to text-vs-random thresholds)
// but 7.8 from 1024, well clear of the default limit of 7.2, while text
// reads 4.5-5.5 and binary structures 3-5.
constexpr std::size_t kChunks = 16;
constexpr std::size_t kChunkBytes = 64;
constexpr std::size_t kSample = kChunks * kChunkBytes;
constexpr std::size_t kStride = kPageSize / kChunks;

// c * log2(c) for every count a histogram of kSample bytes can hold.
const std::array<float, kSample + 1>& clog_table()
{
    static const auto table = [] {
        std::array<float, kSample + 1> t{};
        for (std::size_t c = 1; c <= kSample; ++c)
            t[c] = static_cast<float>(static_cast<double>(c) * std::log2(static_cast<double>(c)));
        return t;
    }();
    return table;
}

} // namespace

double entropy_probe(std::span<const std::uint8_t> page)
{
    if (page.size() < kPageSize)
        throw Error("entropy_probe: page must be " + std::to_string(kPageSize) + " bytes");
    // Two histograms filled alternately: consecutive equal bytes (common in
    // text and binary data) would otherwise serialise on one counter.
    std::uint16_t h0[256] = {}, h1[256] = {};
    for (std::size_t c = 0; c < kChunks; ++c) {
        const std::uint8_t* p = page.data() + c * kStride;
        for (std::size_t i = 0; i < kChunkBytes; i += 2) {
            ++h0[p[i]];
            ++h1[p[i + 1]];
        }
    }
    // H = log2 N - (1/N) sum c log2 c
    const auto& t = clog_table();
    float sum = 0;
    for (unsigned v = 0; v < 256; ++v)
        sum += t[h0[v] + h1[v]];
    return std::log2(static_cast<double>(kSample)) - sum / static_cast<double>(kSample);
}

CompressionPolicy::CompressionPolicy(CompressionConfig cfg, std::uint64_t nr_pages) : cfg_(cfg)
{
    if (cfg_.region_pages == 0)
        throw Error("compression policy: region_pages must be at least 1");
    regions_.resize((nr_pages + cfg_.region_pages - 1) / cfg_.region_pages);
}

CompressionPolicy::Region* CompressionPolicy::region(Pfn pfn)
{
    const std::uint64_t r = pfn / cfg_.region_pages;
    return r < regions_.size() ? &regions_[r] : nullptr;
}

bool CompressionPolicy::should_compress(Pfn first_pfn, std::span<const std::uint8_t> group)
{
    if (cfg_.always)
        return true;
    if (cfg_.algorithm == Algorithm::none || !compress_pays_)
        return false;
    if (Region* r = region(first_pfn); r && r->skip > 0) {
        --r->skip; // the region compressed badly lately: raw until it is re-probed
        return false;
    }
    // Entropy short-circuit on the first and the last page of the group:
    // ~1 us each against ~20 us per page that ISA-L spends on random data
    // before it finds out.  Random groups in a row send the region's next
    // groups raw unprobed (CompressionConfig::entropy_skip).
    if (group.size() >= kPageSize) {
        double e = entropy_probe(group.first(kPageSize));
        if (group.size() >= 2 * kPageSize)
            e = (e + entropy_probe(group.subspan((group.size() / kPageSize - 1) * kPageSize, kPageSize))) / 2;
        ++probes_;
        Region* r = region(first_pfn);
        if (e > cfg_.entropy_limit) {
            // Random data stays random: the more groups in a row were, the
            // more of the region's next ones go raw without a probe.
            if (r) {
                r->random_run = std::min<std::uint32_t>(r->random_run + 1, 31);
                r->skip = std::min<std::uint32_t>(cfg_.entropy_skip, (1u << (r->random_run - 1)) - 1);
            }
            return false;
        }
        if (r)
            r->random_run = 0;
    }
    return true;
}

void CompressionPolicy::record(Pfn first_pfn, std::size_t raw_bytes, std::size_t compressed_bytes)
{
    // 0 means the compressor gave up (output over its limit): as good as
    // ratio 1, and what went on the wire was the raw pages.
    const std::size_t wire = compressed_bytes ? compressed_bytes : raw_bytes;
    raw_total_ += raw_bytes;
    compressed_total_ += wire;
    Region* r = region(first_pfn);
    if (!r || raw_bytes == 0)
        return;
    const float ratio = static_cast<float>(static_cast<double>(raw_bytes) / static_cast<double>(wire));
    // First sample decides at once (a random region is dropped after one
    // try); later ones are averaged with the past (weight 1/2), so a region
    // mixing good and bad groups is judged on its average.
    r->ratio = r->ratio == 0 ? ratio : (r->ratio + ratio) / 2;
    if (r->ratio < std::max(cfg_.min_ratio, ratio_needed_)) {
        r->skip = cfg_.reprobe_after;
        // Forget the bad average, so the re-probe is judged on its own
        // sample: content changes (a random buffer freed and refilled with
        // text) are then picked up after one probe.
        r->ratio = 0;
    }
}

// When compressing pays.  Per group of B bytes, with link rate L (bytes/s),
// per-thread compression throughput C (input bytes/s) and T compressing
// threads, the achieved ratio R = raw/compressed:
//   raw:        B / L                      seconds on the wire
//   compressed: B / (C T)  +  B / (R L)    compress, then send what is left
// Compressing pays iff  1/(C T) + 1/(R L) < 1/L
//               iff  L < C T (1 - 1/R)
//               iff  R > 1 / (1 - L / (C T))   (only possible when L < C T).
// The sum assumes compressing and sending do not overlap.  The pipeline
// does overlap them (then the bound is only C T > L), but on a machine with
// few cores the same cores also run the TCP stack, so the sum is the bound
// that cannot make a migration slower than raw, which is the requirement.
// Examples with C = 0.8 GB/s (igzip level 1 on text), T = 2:
//   1 Gbit/s  (0.125 GB/s): R > 1.08  -> compress everything that shrinks
//   10 Gbit/s (1.25 GB/s):  R > 4.6   -> only very compressible regions
//   loopback  (2.8 GB/s):   L > C T   -> never
// min_ratio stays a floor on top of this, for the CPU of both ends.
namespace {

// The rule above: infinity when the link outruns the compressors.
double ratio_needed_for(double link_bytes_per_s, double compress_bytes_per_s, unsigned threads)
{
    const double ct = compress_bytes_per_s * threads;
    return link_bytes_per_s >= ct ? std::numeric_limits<double>::infinity() : 1.0 / (1.0 - link_bytes_per_s / ct);
}

std::string mb(double bytes_per_s)
{
    char b[32];
    std::snprintf(b, sizeof b, "%.0f MB/s", bytes_per_s / 1e6);
    return b;
}

} // namespace

void CompressionPolicy::set_verdict(bool pays, double ratio_needed)
{
    compress_pays_ = pays;
    ratio_needed_ = pays ? ratio_needed : std::numeric_limits<double>::infinity();
}

bool CompressionPolicy::link_bound() const { return compress_pays_; }

std::string GateVerdict::why() const
{
    if (reason == Reason::no_estimate)
        return "no link estimate yet: raw";
    const std::string rates = "link " + mb(link_rate) + ", compressors " + mb(compress_rate) + " x " +
                              std::to_string(threads) + (compress_rate_measured ? "" : " (nominal)");
    char b[64];
    switch (reason) {
    case Reason::destination_bound:
        std::snprintf(b, sizeof b, "%.0f%%", destination_bound * 100);
        return "the destination is the bottleneck (its receive window held the sender back " + std::string(b) +
               " of the time; " + rates + "): raw";
    case Reason::link_outruns:
        return rates + ": the link outruns the compressors, raw";
    case Reason::same_host:
        return "the destination is on this host (" + rates +
               "; the link is a memcpy on the compressors' cores): raw";
    case Reason::link_bound:
    case Reason::no_estimate:
        break;
    }
    std::snprintf(b, sizeof b, "%.2f", ratio_needed);
    return rates + ": compress regions above ratio " + b;
}

CompressionGate::CompressionGate(unsigned threads, double nominal_compress_rate)
    : threads_(threads ? threads : 1), nominal_(nominal_compress_rate)
{
    v_.compress_rate = nominal_;
    v_.ratio_needed = std::numeric_limits<double>::infinity();
    v_.threads = threads_;
}

bool CompressionGate::due(double now_s) const
{
    // Until the link is measured every sample may be the one that brings
    // the evidence (kEvidenceBytes): the first verdict comes without delay.
    return now_s < 0 || v_.link_rate == 0 || now_s >= last_update_s_ + kUpdateInterval;
}

const GateVerdict& CompressionGate::update(const GateSample& s)
{
    if (s.now_s >= 0)
        last_update_s_ = s.now_s;
    // The destination's share of the stall, over the last interval long
    // enough to judge (the verdict of the previous one stands meanwhile).
    if (s.tcp_busy_s >= 0 && s.tcp_rwnd_limited_s >= 0) {
        if (s.tcp_busy_s < busy_mark_ || s.tcp_rwnd_limited_s < rwnd_mark_) {
            busy_mark_ = s.tcp_busy_s; // counters went back (a channel gone): start over
            rwnd_mark_ = s.tcp_rwnd_limited_s;
        } else if (const double busy = s.tcp_busy_s - busy_mark_; busy >= kMinInterval) {
            v_.destination_bound = std::min(1.0, (s.tcp_rwnd_limited_s - rwnd_mark_) / busy);
            if (s.now_s >= 0 && time_mark_ >= 0 && s.now_s > time_mark_)
                v_.link_busy = std::min(1.0, busy / (s.now_s - time_mark_) / std::max(1u, s.channels));
            busy_mark_ = s.tcp_busy_s;
            rwnd_mark_ = s.tcp_rwnd_limited_s;
            time_mark_ = s.now_s;
        }
        if (time_mark_ < 0)
            time_mark_ = s.now_s;
    }
    v_.compress_rate_measured = s.compress_in >= kEvidenceBytes && s.compress_s > 0;
    v_.compress_rate = v_.compress_rate_measured ? double(s.compress_in) / s.compress_s : nominal_;
    if (s.wire_bytes < link_mark_bytes_ || s.write_s < link_mark_s_) {
        link_mark_bytes_ = s.wire_bytes; // counters went back: start over
        link_mark_s_ = s.write_s;
    } else if (v_.link_rate == 0 ? s.wire_bytes >= kEvidenceBytes && s.write_s > 0
                                 : s.wire_bytes - link_mark_bytes_ >= kEvidenceBytes &&
                                       s.write_s - link_mark_s_ >= kLinkInterval) {
        v_.link_rate = double(s.wire_bytes - link_mark_bytes_) / (s.write_s - link_mark_s_);
        link_mark_bytes_ = s.wire_bytes;
        link_mark_s_ = s.write_s;
    }
    v_.ratio_needed = std::numeric_limits<double>::infinity();
    if (v_.link_rate == 0) {
        v_.reason = GateVerdict::Reason::no_estimate;
    } else if (s.same_host) {
        v_.reason = GateVerdict::Reason::same_host;
    } else if (v_.destination_bound >= kDestinationBound) {
        v_.reason = GateVerdict::Reason::destination_bound;
    } else {
        v_.ratio_needed = ratio_needed_for(v_.link_rate, v_.compress_rate, threads_);
        v_.reason = std::isfinite(v_.ratio_needed) ? GateVerdict::Reason::link_bound
                                                   : GateVerdict::Reason::link_outruns;
    }
    return v_;
}

double CompressionPolicy::overall_ratio() const
{
    return compressed_total_ ? static_cast<double>(raw_total_) / static_cast<double>(compressed_total_) : 0.0;
}

} // namespace fastmig::codec
