#include "libxl-plugin/emu_config.hpp"

#include "stream/types.hpp"

#include <cstdlib>
#include <fstream>
#include <map>

namespace fastmig::emu {

namespace {

const std::map<std::string, const char*> kKeys = {
    {"stock-emu-manager", "FASTMIG_STOCK_EMU_MANAGER"},
    {"backend", "FASTMIG_HELPER_BACKEND"},
    {"options", "FASTMIG_HELPER_OPTIONS"},
    {"done-timeout-ms", "FASTMIG_EMU_DONE_TIMEOUT_MS"},
    {"progress-interval-ms", "FASTMIG_EMU_PROGRESS_MS"},
};

std::string trim(const std::string& s)
{
    auto b = s.find_first_not_of(" \t\r");
    if (b == std::string::npos)
        return "";
    return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

} // namespace

void load_config()
{
    const char* env = std::getenv("FASTMIG_EMU_MANAGER_CONF");
    const std::string path = env && *env ? env : kDefaultConf;
    std::ifstream in(path);
    if (!in)
        return;
    std::string line;
    for (unsigned no = 1; std::getline(in, line); ++no) {
        if (auto hash = line.find('#'); hash != std::string::npos)
            line.resize(hash);
        line = trim(line);
        if (line.empty())
            continue;
        auto eq = line.find('=');
        if (eq == std::string::npos || line.size() > 4096)
            throw Error(path + ":" + std::to_string(no) + ": not a 'key = value' line");
        std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
        auto k = kKeys.find(key);
        if (k == kKeys.end())
            throw Error(path + ":" + std::to_string(no) + ": unknown key '" + key +
                        "' (stock-emu-manager, backend, options, done-timeout-ms, progress-interval-ms)");
        if (const char* set = std::getenv(k->second); !set || !*set) // the environment wins
            ::setenv(k->second, value.c_str(), 1);
    }
}

std::string stock_emu_manager()
{
    const char* env = std::getenv("FASTMIG_STOCK_EMU_MANAGER");
    return env && *env ? env : kDefaultStock;
}

namespace {

// A number of milliseconds from the environment: `fallback` when unset.
std::chrono::milliseconds env_ms(const char* var, std::chrono::milliseconds fallback, bool zero_ok)
{
    const char* env = std::getenv(var);
    if (!env || !*env)
        return fallback;
    std::string v = env;
    if (v.size() > 7 || v.find_first_not_of("0123456789") != std::string::npos || (!zero_ok && std::stoul(v) == 0))
        throw Error(std::string(var) + "=" + v + " is not a number of milliseconds (" + (zero_ok ? "0" : "1") +
                    " to 9999999)");
    return std::chrono::milliseconds(std::stoul(v));
}

} // namespace

std::chrono::milliseconds done_timeout()
{
    return env_ms("FASTMIG_EMU_DONE_TIMEOUT_MS", std::chrono::milliseconds(120000), false);
}

std::chrono::milliseconds progress_interval()
{
    return env_ms("FASTMIG_EMU_PROGRESS_MS", std::chrono::milliseconds(500), true);
}

} // namespace fastmig::emu
