// The line protocol between xenopsd and its emu-manager (docs/emu-manager.md):
// ASCII lines ending in '\n', at most 128 bytes, on two pipes.
//
//   to xenopsd:    info:\b\b\b\bN  prepare:xenguest  suspend:  result:...  error:TEXT
//   from xenopsd:  done  restore:xenguest  abort
//
// One thread owns the pipe from xenopsd (start_reader): it queues the lines
// for whoever waits for them, and an `abort`, or xenopsd closing the pipe,
// cancels every I/O wait of the process (transport.hpp: the engine unwinds
// through its error path and resumes the source) at once, whatever the
// engine is doing.  Lines to xenopsd go out whole from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

namespace fastmig::emu {

class XenopsdLink {
public:
    XenopsdLink(int out_fd, int in_fd, std::chrono::milliseconds done_timeout);
    ~XenopsdLink();
    XenopsdLink(const XenopsdLink&) = delete;
    XenopsdLink& operator=(const XenopsdLink&) = delete;

    void start_reader();

    // One line; longer than 128 bytes with its '\n': cut, ending in "...".
    // Throws Error if xenopsd is gone.
    void send(const std::string& line);
    // `info:` with N in 0..100, sent only when N grows.
    void progress(unsigned percent);
    // error:TEXT; never throws (xenopsd may be gone already).
    void send_error(const std::string& text) noexcept;

    // The next line from xenopsd, waiting at most `timeout`.  Throws Error
    // naming `waiting_for` on a timeout, `abort`, or a closed pipe.
    std::string next_line(std::chrono::milliseconds timeout, const std::string& waiting_for);
    // Sends `request` and waits (at most the done timeout) for `done`.
    void round_trip(const std::string& request);
    bool aborted() const;

    // Stops the reader and closes both pipes: xenopsd sees EOF, the end of
    // this emu-manager's part.  Idempotent.
    void close() noexcept;

private:
    void read_loop();

    int out_fd_, in_fd_;
    std::chrono::milliseconds done_timeout_;
    int stop_fd_ = -1; // eventfd: wakes the reader for close()
    std::thread reader_;
    std::mutex send_mutex_;
    mutable std::mutex m_;
    std::condition_variable cv_;
    std::deque<std::string> lines_;
    std::string closed_why_; // set once: abort, EOF, an over-long line
    bool aborted_ = false;
    int last_percent_ = -1;
};

} // namespace fastmig::emu
