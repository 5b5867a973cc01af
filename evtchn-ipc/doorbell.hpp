// A doorbell: one side rings, the other wakes.  It is the "event channel" of
// evtchn-ipc: a notification without payload (the payload lives in a shared
// region).  It exists so that a sim domain and the migration tool can signal
// pause/resume/ack across a process boundary without a socket round trip and
// without polling shared memory.
//
// Process flavour: an eventfd (a kernel counter; notify adds 1, wait drains
// it).  The Xen flavour, XenDoorbell (xen_channel.hpp), is a bound
// event-channel port behind the same API (notify = xenevtchn_notify, fd =
// xenevtchn_fd, wait = poll + pending + unmask).
#pragma once

#include <chrono>

namespace fastmig::ipc {

class Doorbell {
public:
    Doorbell() = default;
    // A new, unrung doorbell.
    static Doorbell create();
    // Takes ownership of an fd received from the other side (fd_passing).
    static Doorbell adopt(int fd);

    Doorbell(Doorbell&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
    Doorbell& operator=(Doorbell&& o) noexcept;
    Doorbell(const Doorbell&) = delete;
    Doorbell& operator=(const Doorbell&) = delete;
    ~Doorbell();

    // Ring it.  Never blocks (the counter saturating is not a concern: the
    // waiter drains it on every wake).
    void notify();
    // Waits until rung or until timeout; true when rung.  Consumes every
    // pending ring, so several notifies wake one wait.
    bool wait(std::chrono::milliseconds timeout);
    // Consumes pending rings without blocking; true if there were any.
    bool drain();

    // For poll() loops that watch several sources (readable when rung).
    int fd() const { return fd_; }
    bool valid() const { return fd_ >= 0; }

private:
    explicit Doorbell(int fd) : fd_(fd) {}
    int fd_ = -1;
};

} // namespace fastmig::ipc
