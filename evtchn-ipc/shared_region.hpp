// A shared region: a small block of memory both sides map (the "grant page"
// of evtchn-ipc).  It exists to carry state that must be read without a
// round trip: a sim domain's control page (mailbox, pause instants, dirty
// bitmap).  Guest RAM is NOT mapped through this (it is read with pread; see
// stream/domain/sim/sim_domain.cpp for why).
//
// Process flavour: a memfd mapped MAP_SHARED; the fd travels to the other
// process with fd_passing.  The Xen flavour (xen_channel.hpp) has the same
// two roles: XenGrantShare creates (pages granted to the peer domain, the
// grant references in place of the fd) and XenGrantMap adopts (maps them),
// both with data/size.
#pragma once

#include <cstddef>
#include <string>

namespace fastmig::ipc {

class SharedRegion {
public:
    SharedRegion() = default;
    // A new zero-filled region of `size` bytes; `name` shows in /proc/PID/fd.
    static SharedRegion create(const std::string& name, std::size_t size);
    // Maps a region received from the other side; takes ownership of fd.
    // Fails if the file is smaller than `size` (a peer lying about sizes).
    static SharedRegion adopt(int fd, std::size_t size);

    SharedRegion(SharedRegion&& o) noexcept { swap(o); }
    SharedRegion& operator=(SharedRegion&& o) noexcept
    {
        SharedRegion tmp(std::move(o));
        swap(tmp);
        return *this;
    }
    SharedRegion(const SharedRegion&) = delete;
    SharedRegion& operator=(const SharedRegion&) = delete;
    ~SharedRegion();

    void* data() const { return data_; }
    std::size_t size() const { return size_; }
    int fd() const { return fd_; }
    bool valid() const { return data_ != nullptr; }

private:
    void swap(SharedRegion& o) noexcept
    {
        std::swap(fd_, o.fd_);
        std::swap(data_, o.data_);
        std::swap(size_, o.size_);
    }
    int fd_ = -1;
    void* data_ = nullptr;
    std::size_t size_ = 0;
};

} // namespace fastmig::ipc
