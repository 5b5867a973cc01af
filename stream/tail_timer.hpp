// The timing of a receiving channel's last round.  The stop-and-copy round
// (its pages, its ROUND_END if any, the platform state, END) is inside the
// downtime: its parts are timed and logged, to tell a slow source or link
// (reading waits for bytes) from a slow domain (applying).  A mark is taken
// where each round opens; the round the platform state follows is the last
// one.  Used by one channel's reading thread only.
#pragma once

#include "stream/clock.hpp"

#include <cstdint>
#include <cstdio>
#include <string>

namespace fastmig {

class TailTimer {
public:
    // What the channel had spent when the mark was taken (after its applier
    // drained, so that the applying time is exact).
    struct Mark {
        std::uint64_t at_ns, read_ns, apply_ns, calls;
    };

    explicit TailTimer(Mark start) : cur_{start} {}

    void batch_read()
    {
        if (cur_.first_batch_ns == 0)
            cur_.first_batch_ns = monotonic_ns();
    }
    // ROUND_END of round `no`, `pages` long; `now` opens the next round.
    void round_closed(std::uint32_t no, std::uint64_t pages, Mark now)
    {
        cur_.no = no;
        cur_.pages = pages;
        closed_ = cur_;
        cur_ = Round{now, no + 1};
    }
    // The first PLATFORM_STATE: the last round is the one a ROUND_END just
    // closed, or the open one (`pages` read of it so far).
    void state_started(std::uint64_t pages, bool after_round_end)
    {
        state_at_ns_ = monotonic_ns();
        cur_.pages = pages;
        last_ = after_round_end ? closed_ : cur_;
    }
    // END, with no platform state before it: the open round was the last.
    void ended_without_state(std::uint64_t pages)
    {
        cur_.pages = pages;
        last_ = cur_;
    }

    // "round 7 (123 pages: first pages at +0.1 ms) to END at +2.0 ms
    // (reading ..., applying ... in N domain calls, the platform state from
    // +1.5 ms), the last page applied 0.3 ms after END"; times from the
    // instant the last round opened (the previous ROUND_END).
    std::string describe(std::uint64_t end_ns, Mark now) const
    {
        const Mark& o = last_.opened;
        const std::uint64_t first_after = last_.first_batch_ns ? last_.first_batch_ns - o.at_ns : 0;
        const std::uint64_t state_after = state_at_ns_ ? state_at_ns_ - o.at_ns : 0;
        std::string first = first_after ? ": first pages at +" + ms(first_after) : "";
        std::string state = state_after ? ", the platform state from +" + ms(state_after) : "";
        return "round " + std::to_string(last_.no) + " (" + std::to_string(last_.pages) + " pages" + first +
               ") to END at +" + ms(end_ns - o.at_ns) + " (reading " + ms(now.read_ns - o.read_ns) + ", applying " +
               ms(now.apply_ns - o.apply_ns) + " in " + std::to_string(now.calls - o.calls) + " domain calls" +
               state + "), the last page applied " + ms(now.at_ns - end_ns) + " after END";
    }

private:
    struct Round {
        Mark opened; // at the previous ROUND_END (or the start)
        std::uint32_t no = 0;
        std::uint64_t pages = 0, first_batch_ns = 0;
    };

    static std::string ms(std::uint64_t ns)
    {
        char b[32];
        std::snprintf(b, sizeof b, "%.1f ms", double(ns) * 1e-6);
        return b;
    }

    Round cur_, closed_{}, last_{};
    std::uint64_t state_at_ns_ = 0;
};

} // namespace fastmig
