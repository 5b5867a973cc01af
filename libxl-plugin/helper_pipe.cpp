#include "libxl-plugin/helper_pipe.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace fastmig::helper {

std::string widen_pipe(int fd, int bytes)
{
    struct stat st {};
    if (::fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode))
        return "";
    const int before = ::fcntl(fd, F_GETPIPE_SZ);
    if (before >= bytes)
        return "";
    int got = ::fcntl(fd, F_SETPIPE_SZ, bytes);
    std::string why;
    if (got < 0) {
        why = std::strerror(errno);
        // Without CAP_SYS_RESOURCE the ceiling is pipe-max-size.
        int max = 0;
        std::ifstream("/proc/sys/fs/pipe-max-size") >> max;
        if (max > before)
            got = ::fcntl(fd, F_SETPIPE_SZ, max);
    }
    const int now = got > 0 ? got : before;
    std::string line = "stream fd " + std::to_string(fd) + " is a pipe: buffer " + std::to_string(before >> 10) +
                       " KiB -> " + std::to_string(now >> 10) + " KiB";
    if (!why.empty())
        line += " (" + std::to_string(bytes >> 10) + " KiB refused: " + why + ")";
    return line;
}

} // namespace fastmig::helper
