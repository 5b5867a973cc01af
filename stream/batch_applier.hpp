// The second stage of a receiving channel: page batches are written into
// the domain by their own thread while the channel's thread reads, checks
// (CRC, tag) and parses the next records.  With one connection (the libxl
// helper's only fd) that is the difference between one busy core and two.
//
// Order: one applier per channel, first in first out, so the last copy of a
// page written is its newest, as before.  A slot carries a record body (the
// reader hands its buffer over: no copy) and the batch parsed from it.
// drain() waits until every submitted batch is in the domain: the channel
// calls it before ROUND_ACK and at the end of the stream.  An error in the
// applier stops it and is thrown, unchanged, from the channel's next call.
#pragma once

#include "stream/bounded_queue.hpp"
#include "stream/clock.hpp"
#include "stream/first_error.hpp"
#include "stream/types.hpp"
#include "stream/wire.hpp"

#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace fastmig {

class BatchApplier {
public:
    struct Slot {
        std::vector<std::uint8_t> body; // owns the bytes batch's spans point into
        wire::PageBatch batch;
    };
    using ApplyFn = std::function<void(wire::PageBatch&)>;
    // Told each applied batch and what it took (the applier times every
    // batch for busy_ns() already), on the applier's thread, no lock held.
    using AppliedFn = std::function<void(const wire::PageBatch&, std::uint64_t took_ns, std::uint64_t now_ns)>;

    // depth: batches in flight (each up to a record of the largest type).
    static constexpr std::size_t kDepth = 3;
    BatchApplier(ApplyFn apply, std::string thread_name, std::size_t depth = kDepth, AppliedFn applied = nullptr)
        : apply_(std::move(apply)), applied_fn_(std::move(applied)), work_(depth), free_(depth)
    {
        for (std::size_t i = 0; i < depth; ++i) {
            slots_.push_back(std::make_unique<Slot>());
            free_.push(slots_.back().get());
        }
        thread_ = std::thread([this, name = std::move(thread_name)] {
            name_this_thread(name);
            run();
        });
    }

    ~BatchApplier()
    {
        work_.close();
        free_.close();
        thread_.join();
    }

    BatchApplier(const BatchApplier&) = delete;
    BatchApplier& operator=(const BatchApplier&) = delete;

    // A slot to fill; waits while all are in flight.
    Slot& slot()
    {
        auto s = free_.pop();
        if (!s)
            rethrow();
        return **s;
    }

    void submit(Slot& s)
    {
        {
            std::lock_guard<std::mutex> l(m_);
            ++submitted_;
        }
        if (!work_.push(&s))
            rethrow();
    }

    // Time the applier spent applying since the start, in ns (read after
    // drain() for an exact figure; the receiver logs the last round's).
    std::uint64_t busy_ns() const
    {
        std::lock_guard<std::mutex> l(m_);
        return busy_ns_;
    }

    void drain()
    {
        std::unique_lock<std::mutex> l(m_);
        done_cv_.wait(l, [&] { return error_.failed() || applied_ == submitted_; });
        error_.rethrow_if_failed();
    }

private:
    void run()
    {
        while (auto s = work_.pop()) {
            const std::uint64_t t0 = monotonic_ns();
            try {
                apply_((*s)->batch);
            } catch (...) {
                {
                    std::lock_guard<std::mutex> l(m_); // drain() waits for it under m_
                    error_.set(std::current_exception());
                }
                done_cv_.notify_all();
                work_.close();
                free_.close();
                return;
            }
            const std::uint64_t t1 = monotonic_ns();
            {
                std::lock_guard<std::mutex> l(m_);
                ++applied_;
                busy_ns_ += t1 - t0;
            }
            done_cv_.notify_all();
            if (applied_fn_)
                applied_fn_((*s)->batch, t1 - t0, t1);
            free_.push(*s);
        }
    }

    [[noreturn]] void rethrow()
    {
        error_.rethrow_if_failed();
        throw Error("internal: the batch applier stopped without an error");
    }

    ApplyFn apply_;
    AppliedFn applied_fn_;
    std::vector<std::unique_ptr<Slot>> slots_;
    BoundedQueue<Slot*> work_, free_;
    mutable std::mutex m_;
    std::condition_variable done_cv_;
    std::uint64_t submitted_ = 0, applied_ = 0, busy_ns_ = 0;
    FirstError error_; // the only one: the applier stops at its first
    std::thread thread_;
};

} // namespace fastmig
