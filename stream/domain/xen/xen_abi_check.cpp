// Build-time proof that pv_abi.hpp (written out so that the pure logic needs
// no Xen header) matches the Xen headers this backend is built against.
#include "stream/domain/xen/guest_checks.hpp"
#include "stream/domain/xen/hvm_abi.hpp"
#include "stream/domain/xen/pv_abi.hpp"
#include "stream/domain/xen/xen_handles.hpp"

extern "C" {
#include <xen/hvm/params.h>
#include <xen/hvm/save.h>
}

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

static_assert(kNoVcpu == XEN_INVALID_MAX_VCPU_ID);

static_assert(sizeof(xen_cpuid_leaf_t) == cpu_policy::kLeafSize);
static_assert(offsetof(xen_cpuid_leaf_t, c) == 16); // cpu_policy_offers_nested_virt reads ECX there

// ---- hvm_abi.hpp.  (libxc's record numbers live in a private header of
// libxenguest, xg_sr_stream_format.h: checked against the spec by reading.)
namespace hp = hvm_param;
static_assert(hp::kCallbackIrq == HVM_PARAM_CALLBACK_IRQ && hp::kStorePfn == HVM_PARAM_STORE_PFN &&
              hp::kStoreEvtchn == HVM_PARAM_STORE_EVTCHN && hp::kPaeEnabled == HVM_PARAM_PAE_ENABLED &&
              hp::kIoreqPfn == HVM_PARAM_IOREQ_PFN && hp::kBufioreqPfn == HVM_PARAM_BUFIOREQ_PFN &&
              hp::kViridian == HVM_PARAM_VIRIDIAN && hp::kHpetEnabled == HVM_PARAM_HPET_ENABLED &&
              hp::kIdentPt == HVM_PARAM_IDENT_PT &&
              hp::kConsolePfn == HVM_PARAM_CONSOLE_PFN && hp::kConsoleEvtchn == HVM_PARAM_CONSOLE_EVTCHN &&
              hp::kAcpiIoportsLocation == HVM_PARAM_ACPI_IOPORTS_LOCATION && hp::kNestedHvm == HVM_PARAM_NESTEDHVM &&
              hp::kPagingRingPfn == HVM_PARAM_PAGING_RING_PFN && hp::kMonitorRingPfn == HVM_PARAM_MONITOR_RING_PFN &&
              hp::kSharingRingPfn == HVM_PARAM_SHARING_RING_PFN && hp::kIoreqServerPfn == HVM_PARAM_IOREQ_SERVER_PFN &&
              hp::kNrIoreqServerPages == HVM_PARAM_NR_IOREQ_SERVER_PAGES &&
              hp::kVmGenerationIdAddr == HVM_PARAM_VM_GENERATION_ID_ADDR &&
              hp::kX87FipWidth == HVM_PARAM_X87_FIP_WIDTH && hp::kVm86TssSized == HVM_PARAM_VM86_TSS_SIZED &&
              hp::kMcaCap == HVM_PARAM_MCA_CAP);
static_assert(sizeof(hvm_save_descriptor) == hvm_ctx::kDescriptorSize);
static_assert(offsetof(hvm_save_descriptor, typecode) == 0 && offsetof(hvm_save_descriptor, instance) == 2 &&
              offsetof(hvm_save_descriptor, length) == 4);
static_assert(HVM_SAVE_CODE(END) == hvm_ctx::kCodeEnd && HVM_SAVE_CODE(HEADER) == hvm_ctx::kCodeHeader &&
              HVM_SAVE_CODE(CPU) == hvm_ctx::kCodeCpu && HVM_SAVE_CODE_MAX == hvm_ctx::kCodeMax);
static_assert(sizeof(hvm_save_header) == hvm_ctx::kHeaderSize && offsetof(hvm_save_header, gtsc_khz) == 20);
static_assert(HVM_FILE_MAGIC == hvm_ctx::kMagic && HVM_FILE_VERSION == hvm_ctx::kVersion);
static_assert(XEN_X86_EMU_LAPIC == kX86EmuLapic);
static_assert(sizeof(xen_msr_entry_t) == cpu_policy::kMsrSize);

} // namespace fastmig::xen
