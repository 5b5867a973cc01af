#include "libxl-plugin/status_files.hpp"

#include <climits>
#include <fstream>
#include <iterator>

#include <sys/stat.h>
#include <unistd.h>

namespace fastmig::cli {

HelperFile inspect(const std::string& root, const std::string& path, const char* marker)
{
    HelperFile h;
    struct stat st {};
    std::string real = root + path;
    if (::lstat(real.c_str(), &st) != 0)
        return h;
    if (S_ISLNK(st.st_mode)) {
        char buf[PATH_MAX];
        ssize_t n = ::readlink(real.c_str(), buf, sizeof buf - 1);
        if (n > 0)
            h.link.assign(buf, std::size_t(n));
        if (!h.link.empty() && h.link[0] == '/')
            real = root + h.link;
    }
    std::ifstream in(real, std::ios::binary);
    if (!in)
        return h; // dangling symlink: exists = false
    h.exists = true;
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    h.marked = data.find(marker) != std::string::npos;
    return h;
}

std::string describe(const HelperFile& h, const char* ours, const char* other)
{
    if (!h.exists)
        return h.link.empty() ? "missing" : "missing (dangling symlink to " + h.link + ")";
    std::string s = h.marked ? ours : other;
    if (!h.link.empty())
        s += ", symlink to " + h.link;
    return s;
}

} // namespace fastmig::cli
