// Build-time proof that pv_abi.hpp (written out so that the pure logic needs
// no Xen header) matches the Xen headers this backend is built against.
#include "stream/domain/xen/pv_abi.hpp"
#include "stream/domain/xen/xen_handles.hpp"

#include <cstddef>

namespace fastmig::xen {

static_assert(sizeof(xen_pfn_t) == 8, "a 64-bit toolstack is required");
static_assert(kPfinfoNotab == XEN_DOMCTL_PFINFO_NOTAB && kPfinfoL1 == XEN_DOMCTL_PFINFO_L1TAB &&
              kPfinfoL2 == XEN_DOMCTL_PFINFO_L2TAB && kPfinfoL3 == XEN_DOMCTL_PFINFO_L3TAB &&
              kPfinfoL4 == XEN_DOMCTL_PFINFO_L4TAB && kPfinfoPinned == XEN_DOMCTL_PFINFO_LPINTAB &&
              kPfinfoXtab == XEN_DOMCTL_PFINFO_XTAB && kPfinfoXalloc == XEN_DOMCTL_PFINFO_XALLOC &&
              kPfinfoBroken == XEN_DOMCTL_PFINFO_BROKEN && kPfinfoMask == XEN_DOMCTL_PFINFO_LTAB_MASK &&
              kPfinfoLtabTypeMask == XEN_DOMCTL_PFINFO_LTABTYPE_MASK && kPfinfoShift == XEN_DOMCTL_PFINFO_LTAB_SHIFT);

using Vcpu = vcpu_guest_context_x86_64_t;
static_assert(sizeof(Vcpu) == vcpu_ctx::kSize);
static_assert(offsetof(Vcpu, flags) == vcpu_ctx::kFlags);
static_assert(offsetof(Vcpu, user_regs.rdx) == vcpu_ctx::kRdx);
static_assert(offsetof(Vcpu, gdt_frames) == vcpu_ctx::kGdtFrames);
static_assert(sizeof(Vcpu::gdt_frames) / sizeof(Vcpu::gdt_frames[0]) == vcpu_ctx::kGdtFramesMax);
static_assert(offsetof(Vcpu, gdt_ents) == vcpu_ctx::kGdtEnts);
static_assert(offsetof(Vcpu, ctrlreg) == vcpu_ctx::kCtrlreg);
static_assert(VGCF_online == vcpu_ctx::kFlagOnline);
static_assert(FIRST_RESERVED_GDT_ENTRY == vcpu_ctx::kMaxGdtEntries);

using Si = start_info_x86_64_t;
static_assert(offsetof(Si, nr_pages) == start_info::kNrPages);
static_assert(offsetof(Si, shared_info) == start_info::kSharedInfo);
static_assert(offsetof(Si, flags) == start_info::kFlags);
static_assert(offsetof(Si, store_mfn) == start_info::kStoreMfn);
static_assert(offsetof(Si, store_evtchn) == start_info::kStoreEvtchn);
static_assert(offsetof(Si, console.domU.mfn) == start_info::kConsoleMfn);
static_assert(offsetof(Si, console.domU.evtchn) == start_info::kConsoleEvtchn);

using Sh = shared_info_x86_64_t;
static_assert(sizeof(Sh) <= shinfo::kSize);
static_assert(offsetof(Sh, vcpu_info) == shinfo::kVcpuInfo);
static_assert(sizeof(Sh::vcpu_info) == shinfo::kLegacyVcpus * shinfo::kVcpuInfoSize);
static_assert(offsetof(vcpu_info_x86_64_t, evtchn_pending_sel) == shinfo::kVcpuPendingSel);
static_assert(offsetof(Sh, evtchn_pending) == shinfo::kEvtchnPending);
static_assert(sizeof(Sh::evtchn_pending) == shinfo::kEvtchnWordsBytes);
static_assert(offsetof(Sh, evtchn_mask) == shinfo::kEvtchnMask);
static_assert(offsetof(Sh, arch) == shinfo::kArch && sizeof(Sh::arch) == shinfo::kArchSize);
static_assert(offsetof(Sh, arch.max_pfn) == shinfo::kMaxPfn);
static_assert(offsetof(Sh, arch.pfn_to_mfn_frame_list_list) == shinfo::kFrameListList);
static_assert(offsetof(Sh, arch.p2m_cr3) == shinfo::kP2mCr3);

static_assert(sizeof(xen_cpuid_leaf_t) == cpu_policy::kLeafSize);
static_assert(sizeof(xen_msr_entry_t) == cpu_policy::kMsrSize);

} // namespace fastmig::xen
