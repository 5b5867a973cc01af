// fastmig status: which save helper libxl will run for xl save / restore /
// migrate, and whether it is fastmig's.  libxl 4.17 runs $LIBXL_SAVE_HELPER
// when set, else <libexec>/libxl-save-helper (Debian: /usr/lib/xen-4.17/bin);
// `make install-xl-helper` diverts the latter to fastmig's with dpkg.
//
// It also says whether libxl itself carries xen-patches/0001 (a restored PV
// guest's NICs attached while its stream is read, out of the downtime).
//
// FASTMIG_STATUS_ROOT (tests) puts every file looked at under another root;
// FASTMIG_XEN_LIBEXEC names another Xen's libexec directory, FASTMIG_XEN_LIBXL
// another libxenlight.
#include "libxl-plugin/cli.hpp"
#include "libxl-plugin/peers.hpp"
#include "libxl-plugin/status_files.hpp"
#include "libxl-plugin/status_xenopsd.hpp"

#include "config.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>


#ifndef FASTMIG_HELPER_PATH
#define FASTMIG_HELPER_PATH "/usr/local/libexec/fastmig/libxl-save-helper"
#endif

namespace fastmig::cli {

namespace {

// A string only fastmig's helper carries (its usage text, "... for Xen
// X.Y's libxl-save-helper"): the same for a helper built for any Xen 4.x.
const char kMarker[] = "fastmig's drop-in for Xen 4.";
// The environment switch only a libxl with xen-patches/0001 reads.
const char kEarlyNicsMarker[] = "LIBXL_EARLY_NICS";

std::string env_or(const char* name, const std::string& def)
{
    const char* v = std::getenv(name);
    return v && *v ? v : def;
}

// dpkg's diversions file: groups of three lines (path, diverted-to, package
// or ':' for a local diversion).
std::string diverted_to(const std::string& root, const std::string& path)
{
    std::ifstream in(root + "/var/lib/dpkg/diversions");
    std::string from, to, pkg;
    while (std::getline(in, from) && std::getline(in, to) && std::getline(in, pkg))
        if (from == path)
            return to;
    return {};
}

std::string describe(const HelperFile& h)
{
    return describe(h, "fastmig's helper", "not fastmig's (the stock helper?)");
}

} // namespace

int cmd_status(const std::vector<std::string>& args)
{
    if (!args.empty())
        throw UsageError("status takes no argument");
    const std::string root = env_or("FASTMIG_STATUS_ROOT", "");
    const std::string libexec = env_or("FASTMIG_XEN_LIBEXEC", FASTMIG_XEN_LIBEXEC); // configure's
    const std::string stock = libexec + "/libxl-save-helper";
    const std::string ours = FASTMIG_HELPER_PATH;

    std::printf("libxl save helper (used by xl save, xl restore, xl migrate and migrate-receive):\n");
    HelperFile mine = inspect(root, ours, kMarker);
    std::printf("  fastmig's helper:   %s: %s\n", ours.c_str(), mine.exists ? "installed" : "not installed");
    HelperFile st = inspect(root, stock, kMarker);
    std::string div = diverted_to(root, stock);
    std::printf("  stock path:         %s: %s\n", stock.c_str(), describe(st).c_str());
    if (!div.empty())
        std::printf("  dpkg diversion:     %s -> %s (make uninstall-xl-helper restores it)\n", stock.c_str(),
                    div.c_str());
    else
        std::printf("  dpkg diversion:     none\n");

    const char* env = std::getenv("LIBXL_SAVE_HELPER");
    std::string runs;
    HelperFile active;
    if (env && *env) {
        runs = env;
        active = inspect(root, runs, kMarker);
        std::printf("  LIBXL_SAVE_HELPER:  %s (set here; it wins over the stock path, but only where xl runs\n"
                    "                      with it: for xl migrate the receiving side needs it too)\n",
                    env);
    } else {
        runs = stock;
        active = st;
        std::printf("  LIBXL_SAVE_HELPER:  not set in this environment\n");
    }
    std::printf("libxl runs %s: %s\n", runs.c_str(),
                !active.exists ? "MISSING (xl save/restore/migrate would fail)"
                : active.marked ? "fastmig"
                                 : "the stock helper (not fastmig)");

    const std::string libxl =
        env_or("FASTMIG_XEN_LIBXL", "/usr/lib/x86_64-linux-gnu/libxenlight.so." FASTMIG_XEN_VERSION ".0");
    HelperFile lx = inspect(root, libxl, kEarlyNicsMarker);
    const char* early = std::getenv("LIBXL_EARLY_NICS");
    if (!lx.exists)
        std::printf("libxl's restore order: %s not found (FASTMIG_XEN_LIBXL names another)\n", libxl.c_str());
    else if (!lx.marked)
        std::printf("libxl's restore order: Debian's: a restored guest's NICs are attached after its stream,\n"
                    "                       so their hotplug scripts count as migration downtime\n"
                    "                       (xen-patches/0001 changes that)\n");
    else if (early && std::string(early) == "0")
        std::printf("libxl's restore order: patched (xen-patches/0001), but LIBXL_EARLY_NICS=0 here:\n"
                    "                       NICs after the stream\n");
    else
        std::printf("libxl's restore order: patched (xen-patches/0001): a restored PV guest's NICs are\n"
                    "                       attached while its stream is read (LIBXL_EARLY_NICS=0 turns it off)\n");
    std::printf("backend of fastmig's helper: %s (FASTMIG_HELPER_BACKEND=%s)\n",
#ifdef FASTMIG_HAVE_XEN
                "built with the Xen backend for Xen " FASTMIG_XEN_VERSION " (stream/domain/xen/: 64-bit PV, PVH and HVM guests)",
#else
                "the Xen backend is not built (no Xen libraries at configure time)",
#endif
                env_or("FASTMIG_HELPER_BACKEND", "xen").c_str());
    std::printf("suspend of Xen guests: %s (FASTMIG_HELPER_SUSPEND=%s)\n",
                env_or("FASTMIG_HELPER_SUSPEND", "channel") == "libxl"
                    ? "libxl's suspend callback (request, then the @releaseDomain watch)"
                    : "fastmig's event channel (control/shutdown request, xc_domain_subscribe_for_suspend)",
                env_or("FASTMIG_HELPER_SUSPEND", "channel").c_str());
    std::fputs(interop::peers_report().c_str(), stdout);
    print_xenopsd_status(root);
    return 0;
}

} // namespace fastmig::cli
