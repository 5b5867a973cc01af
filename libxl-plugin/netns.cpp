#include "libxl-plugin/netns.hpp"

#include "stream/transport.hpp"
#include "stream/types.hpp"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sched.h>

namespace fastmig::cli {

void enter_netns(const std::string& name)
{
    if (name.empty() || name.find('/') != std::string::npos)
        throw Error("bad network namespace name '" + name + "'");
    std::string path = "/var/run/netns/" + name;
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd)
        throw Error("network namespace '" + name + "': " + std::strerror(errno) + " (create it with ip netns add)");
    if (::setns(fd.get(), CLONE_NEWNET) != 0)
        throw Error("cannot enter network namespace '" + name + "': " + std::strerror(errno));
}

} // namespace fastmig::cli
