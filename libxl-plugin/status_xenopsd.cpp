// xenopsd reads /etc/xenopsd.conf, then every fragment in /etc/xenopsd.conf.d/
// in name order, a later `key=value` overriding an earlier one
// (xapi-idl's Xcp_service.read_config_file).  `emu-manager` names the
// emu-manager every VM runs (default "emu-manager", a relative name searched
// on PATH and `search-path`); a VM whose platform:emu-manager=NAME runs
// /usr/lib/xapi/alternatives/emu-manager/NAME instead, if that file exists.
#include "libxl-plugin/status_xenopsd.hpp"
#include "libxl-plugin/status_files.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#ifndef FASTMIG_EMU_MANAGER_PATH
#define FASTMIG_EMU_MANAGER_PATH "/usr/local/libexec/fastmig/fastmig-emu-manager"
#endif

namespace fastmig::cli {

namespace {

// A string only fastmig-emu-manager carries (its usage text).
const char kEmuMarker[] = "fastmig's drop-in for XenServer/XCP-ng's emu-manager";
const char kConf[] = "/etc/xenopsd.conf";
const char kConfDir[] = "/etc/xenopsd.conf.d";
const char kAlternative[] = "/usr/lib/xapi/alternatives/emu-manager/fastmig";

struct Setting {
    std::string value, file; // empty file: not set anywhere
};

std::string trim(const std::string& s)
{
    auto b = s.find_first_not_of(" \t\r\"");
    if (b == std::string::npos)
        return "";
    return s.substr(b, s.find_last_not_of(" \t\r\"") - b + 1);
}

void scan(const std::string& root, const std::string& file, const std::string& key, Setting& out)
{
    std::ifstream in(root + file);
    for (std::string line; std::getline(in, line);) {
        if (auto hash = line.find('#'); hash != std::string::npos)
            line.resize(hash);
        auto eq = line.find('=');
        if (eq != std::string::npos && trim(line.substr(0, eq)) == key)
            out = {trim(line.substr(eq + 1)), file};
    }
}

// The last value of `key` across the main file and the fragments.
Setting setting(const std::string& root, const std::string& key)
{
    Setting s;
    scan(root, kConf, key, s);
    std::vector<std::string> frags;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(root + kConfDir, ec))
        frags.push_back(e.path().filename().string());
    std::sort(frags.begin(), frags.end());
    for (const auto& f : frags)
        scan(root, std::string(kConfDir) + "/" + f, key, s);
    return s;
}

} // namespace

void print_xenopsd_status(const std::string& root)
{
    std::error_code ec;
    const bool xenopsd = std::filesystem::exists(root + kConf, ec) || std::filesystem::exists(root + kConfDir, ec);
    std::printf("xenopsd's emu-manager (XenServer / XCP-ng: VM migrate, suspend, resume):\n");
    const std::string ours = FASTMIG_EMU_MANAGER_PATH;
    HelperFile mine = inspect(root, ours, kEmuMarker);
    std::printf("  fastmig's drop-in:  %s: %s\n", ours.c_str(), mine.exists ? "installed" : "not installed");
    HelperFile alt = inspect(root, kAlternative, kEmuMarker);
    std::printf("  XAPI alternative:   %s: %s\n", kAlternative,
                alt.exists ? describe(alt, "fastmig's emu-manager", "not fastmig's").c_str() : "missing (make install-xapi-emu-manager)");
    if (!xenopsd) {
        std::printf("xenopsd: not configured here (no %s)\n", kConf);
        return;
    }
    Setting s = setting(root, "emu-manager");
    if (s.file.empty()) {
        std::printf("  global setting:     emu-manager not set in %s or %s/ (xenopsd's default: emu-manager)\n", kConf,
                    kConfDir);
        s.value = "emu-manager";
    } else {
        std::printf("  global setting:     emu-manager=%s (%s)\n", s.value.c_str(), s.file.c_str());
    }
    std::string runs;
    if (!s.value.empty() && s.value[0] == '/') {
        HelperFile g = inspect(root, s.value, kEmuMarker);
        runs = !g.exists ? "MISSING (xenopsd would fail every migration)"
               : g.marked ? "fastmig, for every VM (PV, vGPU and stock streams go on to the stock emu-manager)"
                          : "the stock emu-manager";
    } else {
        runs = "the stock emu-manager (a name on xenopsd's search path)";
    }
    std::printf("xenopsd runs %s: %s\n", s.value.c_str(), runs.c_str());
    if (alt.exists && alt.marked)
        std::printf("  VMs with platform:emu-manager=fastmig run fastmig's whatever the global setting\n");
}

} // namespace fastmig::cli
