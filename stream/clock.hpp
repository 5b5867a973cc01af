// Time helpers: one monotonic clock for every measurement (CLOCK_MONOTONIC is
// shared by all processes of a host, so a sim domain's pause instant and the
// destination's resume instant can be subtracted).
#pragma once

#include <cstdint>
#include <ctime>

namespace fastmig {

inline std::uint64_t monotonic_ns()
{
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::uint64_t(ts.tv_sec) * 1000000000ull + std::uint64_t(ts.tv_nsec);
}

class Stopwatch {
public:
    Stopwatch() : start_(monotonic_ns()) {}
    void restart() { start_ = monotonic_ns(); }
    double seconds() const { return double(monotonic_ns() - start_) * 1e-9; }
    std::uint64_t start_ns() const { return start_; }

private:
    std::uint64_t start_;
};

} // namespace fastmig
