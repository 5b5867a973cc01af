// A private directory under /tmp for one test, removed with everything in
// it when the test ends.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace fastmig::test {

struct TempDir {
    TempDir()
    {
        char t[] = "/tmp/fastmig-test-dir.XXXXXX";
        if (const char* p = ::mkdtemp(t))
            path = p;
        else
            std::abort();
    }
    ~TempDir()
    {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string path;
};

} // namespace fastmig::test
