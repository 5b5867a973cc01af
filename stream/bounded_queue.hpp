// A bounded multi-producer multi-consumer queue: the only way stages of the
// pipeline hand work to each other.  Blocking (no busy waiting), and
// close()able so that every stage can be stopped promptly on error.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>

namespace fastmig {

template <class T> class BoundedQueue {
public:
    explicit BoundedQueue(std::size_t capacity) : cap_(capacity) {}

    // False when the queue was closed (the item is not queued).
    bool push(T v)
    {
        std::unique_lock<std::mutex> l(m_);
        not_full_.wait(l, [&] { return closed_ || q_.size() < cap_; });
        if (closed_)
            return false;
        q_.push_back(std::move(v));
        not_empty_.notify_one();
        return true;
    }

    // Empty optional once closed (pending items are dropped: close is for errors
    // and shutdown, when nobody will use them).
    std::optional<T> pop()
    {
        std::unique_lock<std::mutex> l(m_);
        not_empty_.wait(l, [&] { return closed_ || !q_.empty(); });
        if (closed_)
            return std::nullopt;
        T v = std::move(q_.front());
        q_.pop_front();
        not_full_.notify_one();
        return v;
    }

    void close()
    {
        std::lock_guard<std::mutex> l(m_);
        closed_ = true;
        not_empty_.notify_all();
        not_full_.notify_all();
    }

private:
    std::size_t cap_;
    std::mutex m_;
    std::condition_variable not_empty_, not_full_;
    std::deque<T> q_;
    bool closed_ = false;
};

} // namespace fastmig
