// FirstError: the first failure of a group of threads, kept for the thread
// that reports it.  When one stage of a pipeline fails, the others fail
// next as a consequence (a closed queue, a socket shut down to wake them);
// only the first failure says why, so later ones are dropped.
//
// Thread-safe on its own.  A holder that also waits on a condition variable
// for "failed or done" sets it under that variable's mutex, so a waiter
// that tested failed() under the same mutex cannot miss the wake-up.
#pragma once

#include <atomic>
#include <exception>
#include <mutex>

namespace fastmig {

class FirstError {
public:
    // Keeps `e` unless an error is kept already (or `e` is null).  True when
    // `e` is the one kept: the caller then does what only the first failure
    // should (wake the other stages once).
    bool set(std::exception_ptr e)
    {
        std::lock_guard<std::mutex> l(m_);
        if (error_ || !e)
            return false;
        error_ = e;
        failed_.store(true, std::memory_order_release);
        return true;
    }

    // Lock-free: a stage may test it on every item.
    bool failed() const { return failed_.load(std::memory_order_acquire); }

    // Throws the kept error, if any.
    void rethrow_if_failed() const
    {
        if (!failed())
            return;
        std::lock_guard<std::mutex> l(m_);
        std::rethrow_exception(error_);
    }

private:
    mutable std::mutex m_;
    std::exception_ptr error_;
    std::atomic<bool> failed_{false};
};

} // namespace fastmig
