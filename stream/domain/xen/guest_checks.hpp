// Which guest the source has (64-bit PV, PVH, HVM) and whether fastmig can
// move it: every cause of refusal is found at attach, before the guest is
// suspended, so that a refused guest keeps running.  Pure: the backend
// gathers the facts from Xen and xenstore, this decides.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace fastmig::xen {

enum class GuestType { pv, pvh, hvm };
const char* guest_type_name(GuestType t);

// From the domain info: XEN_DOMINF_hvm_guest and the domain's emulation
// flags (XEN_X86_EMU_*).  Xen accepts an HVM-class domain only with the
// whole emulated platform (HVM, with a device model) or at most a local
// APIC (PVH).
GuestType classify_guest(bool hvm_flag, std::uint32_t emulation_flags);

struct GuestFacts {
    GuestType type = GuestType::pv;
    unsigned pv_width_bytes = 8;           // PV only: xc_domain_get_guest_width
    bool cpuid_offers_nested_virt = false; // VMX or SVM in the guest's CPU policy
    std::uint64_t nestedhvm_param = 0;     // HVM_PARAM_NESTEDHVM where Xen still answers it
    std::string xs_nested_virt;            // /local/domain/N/platform/nested-virt
    std::string pci_path;                  // xenstore path that lists assigned PCI devices, empty if none
    std::string xs_nomigrate;              // /local/domain/N/platform/nomigrate
    std::uint64_t pod_entries = 0;         // HVM: populate-on-demand entries outstanding
    std::uint64_t paged_pages = 0;         // pages paged out by xenpaging
    std::uint64_t shared_pages = 0;        // pages shared by memory sharing
};

// The cause, in one sentence, or nothing when the guest can be moved.
std::optional<std::string> refusal(const GuestFacts& f);

// xc_domain_getinfo's max_vcpu_id for a domain that has no vCPU at all
// (XEN_INVALID_MAX_VCPU_ID): XEN_DOMCTL_createdomain only sizes d->vcpu[];
// the vCPUs are made by XEN_DOMCTL_max_vcpus, which libxl's and xenopsd's
// build_pre call right after it.
inline constexpr std::uint32_t kNoVcpu = ~0u;

// The domain a toolstack created for a restore, as Xen reports it.
struct TargetFacts {
    bool stream_hvm = false;           // the stream holds an HVM-class guest (HVM or PVH)
    bool domain_hvm = false;           // XEN_DOMINF_hvm_guest
    std::uint32_t emulation_flags = 0; // XEN_X86_EMU_*
    std::uint32_t max_vcpu_id = kNoVcpu;
};

// Why the stream's guest cannot go into that domain, or nothing.  Found
// before any page is written: without vCPUs, Xen 4.17 refuses the HVM
// context only at the very end, with a bare EINVAL (hvm_load_cpu_ctxt's
// "has no vcpu" is a debug-build message).
std::optional<std::string> target_refusal(const TargetFacts& f);

// A xenstore flag is set when present and neither "" nor "0".
bool xs_flag_set(const std::string& value);

} // namespace fastmig::xen
