// The helper's end of its pipes to libxl: messages out on stdout, one int
// reply per synchronous callback in on stdin (libxl_save_helper.c's
// helper_transmitmsg / helper_getreply).  Only callbacks whose bit libxl set
// in cbflags may be called; calling another is a bug here, reported as an
// error rather than sent to a libxl that would not understand it.
#pragma once

#include "libxl-plugin/libxl_msgs.hpp"

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>

namespace fastmig::helper {

class LibxlLink {
public:
    // `save` selects which messages are legal (libxl_save_msgs_gen.pl flags
    // 's' and 'r').
    LibxlLink(int out_fd, int in_fd, unsigned cbflags, bool save);

    bool provides(Msg callback) const { return cbflags_ & cbflag(callback); }

    // Never throw: a log line that cannot be delivered is dropped.
    // errnoval -1 is xentoollog's "no errno" (0 would make xl print the
    // line with ": Success" after it).
    void log(XtlLevel level, const std::string& text, int errnoval = -1) noexcept;
    void progress(const std::string& doing_what, std::uint64_t done, std::uint64_t total) noexcept;

    // Callbacks: send, then wait for libxl's int (bounded by reply_timeout;
    // SIGTERM cancels the wait, see transport.hpp cancel_all_io).
    int suspend();
    int switch_qemu_logdirty(std::uint32_t domid, bool enable);
    int static_data_done(unsigned missing);
    void restore_results(std::uint64_t store_gfn, std::uint64_t console_gfn);
    // The last message; libxl answers it too, and the helper must read that
    // answer before exiting (libxl writes it and treats EPIPE as a failure).
    // After libxl's answer, `on_complete` runs (the helper releases its
    // supervisor there) and the link is closed: libxl reads nothing more,
    // so later log lines of level warn and above go to stderr, others are
    // dropped, and every other message is an error.
    int complete(int retval, int errnoval);
    bool completed() const { return completed_; }
    void set_on_complete(void (*f)() noexcept) { on_complete_ = f; }

    void set_reply_timeout(std::chrono::milliseconds t) { reply_timeout_ = t; }

private:
    void send(const Frame& f);
    int call(const Frame& f, Msg m, const char* what);
    void require(Msg m, const char* what) const;

    int out_fd_, in_fd_;
    unsigned cbflags_;
    bool save_;
    std::atomic<bool> completed_{false};
    void (*on_complete_)() noexcept = nullptr;
    std::chrono::milliseconds reply_timeout_{std::chrono::minutes(10)};
    std::mutex m_;
};

} // namespace fastmig::helper
