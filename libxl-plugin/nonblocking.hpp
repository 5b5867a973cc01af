// The toolstack hands over the stream fd blocking; writes to a full pipe or
// socket must be waits that a cancellation (SIGTERM, xenopsd's `abort`) can
// end (transport.hpp), so the helper makes it non-blocking and gives it back
// as it was: the toolstack writes on after the helper's part.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

namespace fastmig::helper {

class NonBlocking {
public:
    explicit NonBlocking(int fd) : fd_(fd), flags_(::fcntl(fd, F_GETFL))
    {
        struct stat st {};
        if (flags_ >= 0 && ::fstat(fd, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)))
            changed_ = ::fcntl(fd, F_SETFL, flags_ | O_NONBLOCK) == 0;
    }
    ~NonBlocking() { restore(); }
    // Before the toolstack has the fd back: the flags live in the open file
    // description it shares, and it sets its own once the helper is done.
    void restore()
    {
        if (changed_)
            ::fcntl(fd_, F_SETFL, flags_);
        changed_ = false;
    }
    NonBlocking(const NonBlocking&) = delete;
    NonBlocking& operator=(const NonBlocking&) = delete;

private:
    int fd_;
    int flags_;
    bool changed_ = false;
};

} // namespace fastmig::helper
