#include "stream/domain/xen/guest_checks.hpp"

#include "stream/domain/xen/hvm_abi.hpp"

namespace fastmig::xen {

const char* guest_type_name(GuestType t)
{
    switch (t) {
    case GuestType::pv:
        return "PV";
    case GuestType::pvh:
        return "PVH";
    case GuestType::hvm:
        return "HVM";
    }
    return "?";
}

GuestType classify_guest(bool hvm_flag, std::uint32_t emulation_flags)
{
    if (!hvm_flag)
        return GuestType::pv;
    return (emulation_flags & ~kX86EmuLapic) == 0 ? GuestType::pvh : GuestType::hvm;
}

std::optional<std::string> target_refusal(const TargetFacts& f)
{
    if (f.domain_hvm != f.stream_hvm)
        return std::string("the stream holds ") + (f.stream_hvm ? "an HVM/PVH" : "a PV") +
               " guest but the target domain is " + guest_type_name(classify_guest(f.domain_hvm, f.emulation_flags)) +
               ": the guest type must be the same on both sides";
    if (f.max_vcpu_id == kNoVcpu)
        return "the target domain has no vCPUs: the toolstack that created it did not make them "
               "(XEN_DOMCTL_max_vcpus, as libxl's and xenopsd's build_pre do), and Xen would refuse the guest's "
               "CPU state";
    return std::nullopt;
}

bool xs_flag_set(const std::string& value) { return !value.empty() && value != "0"; }

std::optional<std::string> refusal(const GuestFacts& f)
{
    if (f.type == GuestType::pv && f.pv_width_bytes != 8)
        return "the guest is " + std::to_string(f.pv_width_bytes * 8) +
               "-bit PV; fastmig moves 64-bit PV, PVH and HVM guests only";
    if (xs_flag_set(f.xs_nomigrate))
        return "the guest is marked not migratable (platform/nomigrate = \"" + f.xs_nomigrate + "\")";
    if (f.cpuid_offers_nested_virt || f.nestedhvm_param || xs_flag_set(f.xs_nested_virt))
        return std::string("the guest runs with nested virtualisation (") +
               (f.cpuid_offers_nested_virt ? "VMX/SVM in its CPU policy"
                : f.nestedhvm_param        ? "HVM_PARAM_NESTEDHVM set"
                                           : "platform/nested-virt = \"" + f.xs_nested_virt + "\"") +
               "): the state of its own guests is not migratable";
    if (!f.pci_path.empty())
        return "the guest has PCI devices passed through (" + f.pci_path + "): they cannot be migrated";
    if (f.pod_entries)
        return "the guest has " + std::to_string(f.pod_entries) +
               " populate-on-demand entries outstanding (memory below maxmem at boot): not supported";
    if (f.paged_pages || f.shared_pages)
        return "the guest has " + std::to_string(f.paged_pages) + " pages paged out and " +
               std::to_string(f.shared_pages) + " shared: memory paging and sharing are not supported";
    return std::nullopt;
}

} // namespace fastmig::xen
