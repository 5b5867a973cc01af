// When to stop precopy.  Pure logic, no I/O, so every rule is unit-tested.
//
// After each round the engine reports what it sent and how long it took, and
// how many pages the guest dirtied meanwhile.  The policy estimates the link's
// bandwidth and the guest's dirty rate and predicts the downtime of stopping
// now: (dirty pages x bytes per dirty page) / bandwidth + fixed cost.  It
// stops when that is under the target, when the round limit is reached, or
// when rounds stop shrinking the dirty set (the guest dirties as fast as we
// send: more rounds would only add traffic).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fastmig {

struct PolicyConfig {
    double downtime_target_ms = 10.0;
    unsigned max_rounds = 30;          // precopy rounds including round 0
    // A round "makes progress" when it leaves fewer than this fraction of the
    // previous round's dirty pages; `stall_rounds` rounds in a row without
    // progress stop precopy.
    double progress_ratio = 0.9;
    unsigned stall_rounds = 3;
    // Time spent in stop-and-copy whatever the page count: suspend, platform
    // state, END and the destination's answer.  Added to every prediction.
    double fixed_cost_ms = 1.0;
};

struct RoundSample {
    unsigned round = 0;
    std::uint64_t pages = 0;        // pages handled in the round (all encodings)
    std::uint64_t data_pages = 0;   // pages that carried data (not zero)
    std::uint64_t bytes = 0;        // bytes written to the link
    double seconds = 0;             // wall time of the round
    std::uint64_t dirty_after = 0;  // pages the guest dirtied during the round
};

enum class StopReason { none, converged, max_rounds, no_progress };
const char* stop_reason_name(StopReason r);

struct Decision {
    bool stop = false;
    StopReason reason = StopReason::none;
    double predicted_downtime_ms = 0;
    std::string why; // one sentence for logs and --json
};

class PrecopyPolicy {
public:
    explicit PrecopyPolicy(PolicyConfig cfg) : cfg_(cfg) {}

    // Record a finished round and decide whether the next one is
    // stop-and-copy.  `sample.dirty_after` is the dirty set left to send.
    Decision after_round(const RoundSample& sample);

    double bandwidth_bytes_per_s() const { return bandwidth_; }
    double dirty_pages_per_s() const { return dirty_rate_; }
    double bytes_per_dirty_page() const { return bytes_per_page_; }
    const std::vector<RoundSample>& history() const { return history_; }
    const PolicyConfig& config() const { return cfg_; }

    double predict_ms(std::uint64_t dirty_pages) const;

private:
    PolicyConfig cfg_;
    std::vector<RoundSample> history_;
    double bandwidth_ = 0;      // bytes/s, smoothed
    double dirty_rate_ = 0;     // pages/s, smoothed
    double bytes_per_page_ = 0; // bytes on the wire per data page, smoothed
    unsigned stalled_ = 0;
};

} // namespace fastmig
