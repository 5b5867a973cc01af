#include "libxl-plugin/emu_args.hpp"

#include <getopt.h>

#include <limits>

namespace fastmig::emu {

const char* const kEmuUsage =
    "usage: fastmig-emu-manager -controloutfd FD -controlinfd FD -fd FD -mode hvm_save|hvm_restore|save|restore\n"
    "                           -domid D [-live true] [-dm qemu|vgpu[:FD]] [-store_port P -console_port P]\n"
    "                           [-mem_pnode N] [-debug true] [-compress true] [-fork X]\n"
    "       fastmig-emu-manager -supports migration-v2\n"
    "fastmig's drop-in for XenServer/XCP-ng's emu-manager: xenopsd runs it (emu-manager= in\n"
    "/etc/xenopsd.conf, or the VM's platform:emu-manager=fastmig) and talks to it in lines on the\n"
    "control fds; not for interactive use.  PV guests, vGPU and stock libxc streams go to the stock\n"
    "emu-manager (FASTMIG_STOCK_EMU_MANAGER, or stock-emu-manager= in FASTMIG_EMU_MANAGER_CONF,\n"
    "default /etc/fastmig/emu-manager.conf).  See docs/emu-manager.md.\n";

const char* mode_name(Mode m)
{
    switch (m) {
    case Mode::hvm_save: return "hvm_save";
    case Mode::save: return "save";
    case Mode::hvm_restore: return "hvm_restore";
    case Mode::restore: return "restore";
    }
    return "?";
}

namespace {

std::uint64_t number(const std::string& s, const char* what, std::uint64_t max)
{
    if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos)
        throw UsageError(std::string("-") + what + ": '" + s + "' is not a decimal number");
    std::uint64_t v = std::stoull(s);
    if (v > max)
        throw UsageError(std::string("-") + what + ": " + s + " is above " + std::to_string(max));
    return v;
}

bool boolean(const std::string& s, const char* what)
{
    if (s == "true")
        return true;
    if (s == "false")
        return false;
    throw UsageError(std::string("-") + what + ": '" + s + "' is not true or false");
}

enum Opt {
    o_controloutfd = 1000, o_controlinfd, o_fd, o_mode, o_domid, o_live, o_dm, o_store_port, o_console_port,
    o_mem_pnode, o_debug, o_compress, o_fork, o_supports, o_traceparent, o_tracestate, o_trace,
};

const struct option kOptions[] = {
    {"controloutfd", required_argument, nullptr, o_controloutfd},
    {"controlinfd", required_argument, nullptr, o_controlinfd},
    {"fd", required_argument, nullptr, o_fd},
    {"mode", required_argument, nullptr, o_mode},
    {"domid", required_argument, nullptr, o_domid},
    {"live", required_argument, nullptr, o_live},
    {"dm", required_argument, nullptr, o_dm},
    {"store_port", required_argument, nullptr, o_store_port},
    {"console_port", required_argument, nullptr, o_console_port},
    {"mem_pnode", required_argument, nullptr, o_mem_pnode},
    {"debug", required_argument, nullptr, o_debug},
    {"compress", required_argument, nullptr, o_compress},
    {"fork", required_argument, nullptr, o_fork},
    {"supports", required_argument, nullptr, o_supports},
    {"traceparent", required_argument, nullptr, o_traceparent},
    {"tracestate", required_argument, nullptr, o_tracestate},
    {"trace", required_argument, nullptr, o_trace},
    {nullptr, 0, nullptr, 0},
};

constexpr std::uint64_t kMaxFd = std::numeric_limits<int>::max();
constexpr std::uint64_t kMaxDomid = 0x7fef; // below DOMID_FIRST_RESERVED
constexpr std::uint64_t kMaxU32 = std::numeric_limits<std::uint32_t>::max();

} // namespace

EmuArgs parse_emu_args(const std::vector<std::string>& args)
{
    std::vector<std::string> copy;
    copy.reserve(args.size() + 1);
    copy.push_back("fastmig-emu-manager");
    copy.insert(copy.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& s : copy)
        argv.push_back(s.data());
    argv.push_back(nullptr);

    EmuArgs a;
    bool have_out = false, have_in = false, have_fd = false, have_domid = false;
    // getopt keeps its state in globals: 0 asks glibc for a full reset.
    optind = 0;
    opterr = 0;
    for (;;) {
        int c = getopt_long_only(int(copy.size()), argv.data(), "", kOptions, nullptr);
        if (c == -1)
            break;
        const std::string v = optarg ? optarg : "";
        switch (c) {
        case o_controloutfd: a.control_out = int(number(v, "controloutfd", kMaxFd)); have_out = true; break;
        case o_controlinfd: a.control_in = int(number(v, "controlinfd", kMaxFd)); have_in = true; break;
        case o_fd: a.fd = int(number(v, "fd", kMaxFd)); have_fd = true; break;
        case o_domid: a.domid = std::uint32_t(number(v, "domid", kMaxDomid)); have_domid = true; break;
        case o_mode:
            if (v == "hvm_save") a.mode = Mode::hvm_save;
            else if (v == "save") a.mode = Mode::save;
            else if (v == "hvm_restore") a.mode = Mode::hvm_restore;
            else if (v == "restore") a.mode = Mode::restore;
            else throw UsageError("-mode: '" + v + "' is not hvm_save, save, hvm_restore or restore");
            break;
        case o_live: a.live = boolean(v, "live"); break;
        case o_dm:
            if (v != "qemu" && v != "vgpu" && v.rfind("vgpu:", 0) != 0)
                throw UsageError("-dm: '" + v + "' is not qemu, vgpu or vgpu:FD");
            if (v.rfind("vgpu:", 0) == 0)
                (void)number(v.substr(5), "dm vgpu:FD", kMaxFd);
            a.dm = v;
            break;
        case o_store_port: a.store_port = std::uint32_t(number(v, "store_port", kMaxU32)); break;
        case o_console_port: a.console_port = std::uint32_t(number(v, "console_port", kMaxU32)); break;
        case o_mem_pnode: (void)number(v, "mem_pnode", kMaxU32); break;
        case o_debug: a.debug = boolean(v, "debug"); break;
        case o_compress: a.compress = boolean(v, "compress"); break;
        case o_supports: a.supports = v; break;
        case o_fork: case o_traceparent: case o_tracestate: case o_trace: break;
        case ':':
            throw UsageError(std::string(argv[optind - 1]) + " needs a value");
        default:
            throw UsageError("unknown or ambiguous option '" + std::string(argv[optind - 1]) + "'");
        }
    }
    if (optind < int(copy.size()))
        throw UsageError("unexpected argument '" + copy[std::size_t(optind)] + "'");
    if (!a.supports.empty())
        return a;
    if (!have_out || !have_in || !have_fd)
        throw UsageError("-controloutfd, -controlinfd and -fd are required");
    if (!a.mode)
        throw UsageError("-mode is required");
    if (!have_domid)
        throw UsageError("-domid is required");
    if (!a.save() && (!a.store_port || !a.console_port))
        throw UsageError(std::string("-mode ") + mode_name(*a.mode) + " needs -store_port and -console_port");
    if (a.control_out == a.fd || a.control_in == a.fd || a.control_in == a.control_out)
        throw UsageError("-controloutfd, -controlinfd and -fd must be three different descriptors");
    return a;
}

std::string stock_reason_from_args(const EmuArgs& a)
{
    if (a.mode == Mode::save || a.mode == Mode::restore)
        return std::string("a PV guest (-mode ") + mode_name(*a.mode) + ")";
    if (a.dm.rfind("vgpu", 0) == 0)
        return "a vGPU (-dm " + a.dm + ")";
    return "";
}

} // namespace fastmig::emu
