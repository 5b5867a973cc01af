// XenServer's restore side effects (restore_platform.hpp) on a domain
// xenopsd created: the part xenguest does before xc_domain_restore (HPET,
// time offset, vCPU hard affinity, credit weight and cap) and the part it
// does after (the VM generation id, written into guest memory).
#include "stream/domain/xen/xen_handles.hpp"
#include "stream/domain/xen/bytes.hpp"
#include "stream/domain/xen/hvm_abi.hpp"

#include <algorithm>

#include <memory>
#include <sys/mman.h>

namespace fastmig::xen {

PlatformKeyReader platform_keys(std::uint32_t domid)
{
    auto xs = std::make_shared<XsHandle>();
    const std::string who = "xen:" + std::to_string(domid);
    if (!*xs)
        fail_errno(who, Phase::setup, "cannot connect to xenstore to read the VM's platform/ keys");
    const std::string base = "/local/domain/" + std::to_string(domid) + "/platform/";
    return [xs, base](const std::string& key) { return xs->read(base + key); };
}

void apply_platform_before_stream(std::uint32_t domid, const RestorePlatform& p, const LogFn& log_in)
{
    const std::string who = "xen:" + std::to_string(domid);
    LogFn log = default_log(log_in, who);
    XcHandle h(who);
    // xenguest does not check this one: a PVH guest has no HPET to enable.
    if (xc_hvm_param_set(h.xch, domid, hvm_param::kHpetEnabled, p.hpet ? 1 : 0) < 0)
        log(std::string("platform: HPET_ENABLED not set (") + std::strerror(errno) + ")");
    if (xc_domain_set_time_offset(h.xch, domid, p.time_offset) < 0)
        fail_errno(who, Phase::setup, "cannot set the time offset to " + std::to_string(p.time_offset) + " s");
    const int bytes = xc_get_cpumap_size(h.xch);
    if (bytes <= 0 && !p.affinity.empty())
        fail_errno(who, Phase::setup, "cannot read the host's cpumap size");
    for (const auto& a : p.affinity) {
        std::unique_ptr<std::uint8_t, decltype(&std::free)> map(xc_cpumap_alloc(h.xch), &std::free);
        if (!map)
            fail_errno(who, Phase::setup, "cannot allocate a cpumap");
        // As xenguest: pCPUs beyond the host's are dropped.
        std::memcpy(map.get(), a.cpus.data(), std::min<std::size_t>(a.cpus.size(), std::size_t(bytes)));
        if (xc_vcpu_setaffinity(h.xch, domid, int(a.vcpu), map.get(), nullptr, XEN_VCPUAFFINITY_HARD) < 0)
            fail_errno(who, Phase::setup, "cannot set vcpu " + std::to_string(a.vcpu) + "'s hard affinity");
    }
    if (p.weight || p.cap) {
        xen_domctl_sched_credit sdom{};
        if (xc_sched_credit_domain_get(h.xch, domid, &sdom) < 0) {
            // As xenguest: another scheduler than credit.
            log(std::string("platform: vcpu weight/cap not set, the credit scheduler does not answer (") +
                std::strerror(errno) + ")");
        } else {
            if (p.weight)
                sdom.weight = p.weight;
            if (p.cap)
                sdom.cap = p.cap;
            if (xc_sched_credit_domain_set(h.xch, domid, &sdom) < 0)
                fail_errno(who, Phase::setup, "cannot set the credit scheduler's weight and cap");
        }
    }
}

void apply_platform_after_build(std::uint32_t domid, const RestorePlatform& p, const LogFn& log_in)
{
    const std::string who = "xen:" + std::to_string(domid);
    LogFn log = default_log(log_in, who);
    if (p.generation_id.empty())
        return;
    XcHandle h(who);
    std::uint64_t paddr = 0;
    if (xc_hvm_param_get(h.xch, domid, hvm_param::kVmGenerationIdAddr, &paddr) < 0)
        fail_errno(who, Phase::restore, "cannot read VM_GENERATION_ID_ADDR");
    if (paddr == 0) { // no hvmloader-built ACPI device (PVH, or a guest without one)
        log("platform: generation id not written (the guest has no VM_GENERATION_ID_ADDR)");
        return;
    }
    const auto bytes = generation_id_bytes(p.generation_id);
    const std::size_t off = paddr % kPageSize;
    if (off > kPageSize - 16)
        throw Error(who, Phase::restore, "VM_GENERATION_ID_ADDR " + hex(paddr) + " leaves no 16 bytes in its page");
    ForeignMap m = map_frames(h.fmem, domid, PROT_READ | PROT_WRITE, {xen_pfn_t(paddr / kPageSize)}, who,
                              Phase::restore, "the VM generation id");
    std::memcpy(m.page(0) + off, bytes.data(), bytes.size());
    log("platform: generation id " + p.generation_id + " written at " + hex(paddr));
}

} // namespace fastmig::xen
