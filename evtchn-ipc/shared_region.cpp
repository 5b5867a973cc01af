#include "evtchn-ipc/shared_region.hpp"

#include "stream/types.hpp"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace fastmig::ipc {

namespace {

void* map_fd(int fd, std::size_t size, const std::string& what)
{
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        throw_errno(what + ": mmap");
    return p;
}

} // namespace

SharedRegion SharedRegion::create(const std::string& name, std::size_t size)
{
    if (size == 0)
        throw Error("shared region " + name + ": empty");
    int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC);
    if (fd < 0)
        throw_errno("shared region " + name + ": memfd_create");
    if (::ftruncate(fd, off_t(size)) < 0) {
        int e = errno;
        ::close(fd);
        errno = e;
        throw_errno("shared region " + name + ": ftruncate");
    }
    SharedRegion r;
    r.fd_ = fd;
    r.size_ = size;
    r.data_ = map_fd(fd, size, "shared region " + name);
    return r;
}

SharedRegion SharedRegion::adopt(int fd, std::size_t size)
{
    SharedRegion r;
    r.fd_ = fd; // owned from here on, even if we throw
    struct stat st;
    if (::fstat(fd, &st) < 0)
        throw_errno("shared region: fstat");
    if (size == 0 || std::size_t(st.st_size) < size)
        throw Error("shared region: peer announced " + std::to_string(size) + " bytes, file has " +
                    std::to_string(st.st_size));
    r.size_ = size;
    r.data_ = map_fd(fd, size, "shared region");
    return r;
}

SharedRegion::~SharedRegion()
{
    if (data_)
        ::munmap(data_, size_);
    if (fd_ >= 0)
        ::close(fd_);
}

} // namespace fastmig::ipc
