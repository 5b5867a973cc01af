// What `fastmig status` learns from a file: whether it exists (through a
// symlink, as seen from FASTMIG_STATUS_ROOT) and whether it holds a marker
// string only fastmig's programs (or the patched libxl) carry.
#pragma once

#include <string>

namespace fastmig::cli {

struct HelperFile {
    bool exists = false;
    bool marked = false; // holds the marker looked for (fastmig's helper, the patched libxl)
    std::string link;    // symlink target, if a symlink
};

// `path` as seen from `root` (an absolute symlink points inside root too).
HelperFile inspect(const std::string& root, const std::string& path, const char* marker);

// "missing", "missing (dangling symlink to X)", or `ours`/`other` as the
// marker was found or not, then ", symlink to X" if it is one.
std::string describe(const HelperFile& h, const char* ours, const char* other);

} // namespace fastmig::cli
