#include "stream/domain/xen/xen_handles.hpp"

#include "stream/domain/xen/bytes.hpp"

#include <chrono>
#include <iostream>
#include <thread>

namespace fastmig::xen {

ForeignMap map_frames(xenforeignmemory_handle* fmem, std::uint32_t domid, int prot,
                      const std::vector<xen_pfn_t>& frames, const std::string& who, Phase phase,
                      const std::string& what)
{
    std::vector<int> errs;
    ForeignMap m(fmem, domid, prot, frames, errs);
    if (!m && !frames.empty())
        fail_errno(who, phase, "cannot map " + std::to_string(frames.size()) + " frames of " + what);
    for (std::size_t i = 0; i < frames.size(); ++i)
        if (errs[i])
            throw Error(who, phase,
                        "cannot map frame " + hex(frames[i]) + " of " + what + ": " + std::strerror(-errs[i]));
    return m;
}

xc_domaininfo_t domain_info(xc_interface* xch, std::uint32_t domid, const std::string& who, Phase phase)
{
    xc_domaininfo_t info{};
    int n = xc_domain_getinfolist(xch, domid, 1, &info);
    if (n < 0)
        fail_errno(who, phase, "cannot read the domain's info");
    if (n == 0 || info.domain != domid)
        throw Error(who, phase, "domain " + std::to_string(domid) + " does not exist");
    return info;
}

bool is_suspended(const xc_domaininfo_t& info)
{
    return (info.flags & XEN_DOMINF_shutdown) &&
           ((info.flags >> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask) == SHUTDOWN_suspend;
}

std::string describe_state(const xc_domaininfo_t& info)
{
    std::string s;
    if (info.flags & XEN_DOMINF_dying)
        s += "dying ";
    if (info.flags & XEN_DOMINF_shutdown)
        s += "shut down (reason " +
             std::to_string((info.flags >> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask) + ") ";
    if (info.flags & XEN_DOMINF_paused)
        s += "paused ";
    if (s.empty())
        s = "running ";
    s.pop_back();
    return s;
}

LogFn default_log(LogFn log, const std::string& who)
{
    if (log)
        return log;
    return [who](const std::string& line) { std::cerr << "fastmig " << who << ": " << line << std::endl; };
}

std::unique_ptr<IncomingDomain> XenProvider::create(std::uint64_t nr_pages, std::uint32_t kind,
                                                    const std::string& source_name)
{
    std::string who = "xen:" + std::to_string(params_.domid);
    if (kind != kDomainKindXenPv && kind != kDomainKindXenHvm)
        throw Error(who, Phase::setup,
                    "the stream from " + source_name + " holds a domain of kind " + std::to_string(kind) +
                        ", not a Xen guest");
    auto d = attach_restore(params_, nr_pages, kind == kDomainKindXenHvm);
    last_ = d.get();
    return d;
}

std::string wait_domain_settled(std::uint32_t domid, bool until_running, std::chrono::milliseconds max,
                                std::chrono::milliseconds interval)
{
    const auto t0 = std::chrono::steady_clock::now();
    auto after = [&] {
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
        return " after " + std::to_string(ms.count()) + " ms";
    };
    xc_interface* xch = xc_interface_open(nullptr, nullptr, 0);
    if (!xch)
        return std::string("not watched (cannot open the hypervisor interface)");
    std::string seen;
    for (;;) {
        xc_domaininfo_t info{};
        int n = xc_domain_getinfolist(xch, domid, 1, &info);
        if (n < 1 || info.domain != domid || (info.flags & XEN_DOMINF_dying)) {
            seen = "gone" + after();
            break;
        }
        if (until_running && !(info.flags & (XEN_DOMINF_paused | XEN_DOMINF_shutdown))) {
            seen = "running" + after();
            break;
        }
        if (std::chrono::steady_clock::now() - t0 >= max) {
            seen = "unchanged" + after();
            break;
        }
        std::this_thread::sleep_for(interval);
    }
    xc_interface_close(xch);
    return seen;
}

} // namespace fastmig::xen
