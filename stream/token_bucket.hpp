// --max-bandwidth: a token bucket shared by every channel writer.  A writer
// takes the bytes it is about to send; when the bucket is in debt it sleeps
// until the debt is repaid, so the long-run rate never exceeds `rate` and a
// burst is at most `burst` bytes.
#pragma once

#include "stream/clock.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>

namespace fastmig {

class TokenBucket {
public:
    // rate in bytes/s; 0 means unlimited.
    explicit TokenBucket(double rate)
        : rate_(rate), burst_(std::max(64.0 * 1024, rate * 0.002)), tokens_(burst_), last_(monotonic_ns())
    {
    }

    void take(std::size_t bytes)
    {
        if (rate_ <= 0)
            return;
        double wait_s;
        {
            std::lock_guard<std::mutex> l(m_);
            std::uint64_t now = monotonic_ns();
            tokens_ = std::min(burst_, tokens_ + double(now - last_) * 1e-9 * rate_);
            last_ = now;
            tokens_ -= double(bytes);
            wait_s = tokens_ < 0 ? -tokens_ / rate_ : 0;
        }
        if (wait_s > 0)
            std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));
    }

private:
    double rate_, burst_, tokens_;
    std::uint64_t last_;
    std::mutex m_;
};

} // namespace fastmig
