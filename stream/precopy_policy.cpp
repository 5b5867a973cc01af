#include "stream/precopy_policy.hpp"

#include <algorithm>
#include <cstdio>

namespace fastmig {

const char* stop_reason_name(StopReason r)
{
    switch (r) {
    case StopReason::none: return "none";
    case StopReason::converged: return "converged";
    case StopReason::max_rounds: return "max-rounds";
    case StopReason::no_progress: return "no-progress";
    }
    return "unknown";
}

namespace {

// Exponential smoothing that takes the first sample as is.
double smooth(double old, double sample, double weight)
{
    return old == 0 ? sample : old * (1 - weight) + sample * weight;
}

// Rounds that moved less than this are dominated by latency, not bandwidth;
// their throughput says little about the link.
constexpr std::uint64_t kMinBytesForBandwidth = 256 * 1024;

} // namespace

double PrecopyPolicy::predict_ms(std::uint64_t dirty_pages) const
{
    double per_page = bytes_per_page_ > 0 ? bytes_per_page_ : 4096.0;
    double bw = bandwidth_ > 0 ? bandwidth_ : 100e6; // pessimistic before any sample
    return cfg_.fixed_cost_ms + 1000.0 * double(dirty_pages) * per_page / bw;
}

Decision PrecopyPolicy::after_round(const RoundSample& s)
{
    history_.push_back(s);

    if (s.seconds > 0 && (s.bytes >= kMinBytesForBandwidth || bandwidth_ == 0))
        bandwidth_ = smooth(bandwidth_, double(s.bytes) / s.seconds, 0.5);
    if (s.data_pages > 0)
        bytes_per_page_ = smooth(bytes_per_page_, double(s.bytes) / double(s.data_pages), 0.5);
    if (s.seconds > 0)
        dirty_rate_ = smooth(dirty_rate_, double(s.dirty_after) / s.seconds, 0.5);

    Decision d;
    d.predicted_downtime_ms = predict_ms(s.dirty_after);
    char buf[256];

    if (d.predicted_downtime_ms <= cfg_.downtime_target_ms) {
        d.stop = true;
        d.reason = StopReason::converged;
        std::snprintf(buf, sizeof buf,
                      "%llu dirty pages would take %.2f ms, within the %.2f ms target",
                      (unsigned long long)s.dirty_after, d.predicted_downtime_ms, cfg_.downtime_target_ms);
        d.why = buf;
        return d;
    }

    if (history_.size() >= 2) {
        const auto& prev = history_[history_.size() - 2];
        if (double(s.dirty_after) >= cfg_.progress_ratio * double(prev.dirty_after))
            ++stalled_;
        else
            stalled_ = 0;
    }
    if (stalled_ >= cfg_.stall_rounds) {
        d.stop = true;
        d.reason = StopReason::no_progress;
        std::snprintf(buf, sizeof buf,
                      "the dirty set stopped shrinking for %u rounds (%llu pages, %.0f pages/s dirtied); "
                      "stopping with a predicted downtime of %.2f ms",
                      stalled_, (unsigned long long)s.dirty_after, dirty_rate_, d.predicted_downtime_ms);
        d.why = buf;
        return d;
    }
    if (history_.size() >= cfg_.max_rounds) {
        d.stop = true;
        d.reason = StopReason::max_rounds;
        std::snprintf(buf, sizeof buf, "reached --max-rounds %u; stopping with a predicted downtime of %.2f ms",
                      cfg_.max_rounds, d.predicted_downtime_ms);
        d.why = buf;
        return d;
    }
    std::snprintf(buf, sizeof buf, "%llu dirty pages would take %.2f ms; another round",
                  (unsigned long long)s.dirty_after, d.predicted_downtime_ms);
    d.why = buf;
    return d;
}

} // namespace fastmig
