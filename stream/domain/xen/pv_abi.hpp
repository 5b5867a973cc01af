// Constants of Xen's public ABI that the PV backend's pure logic needs,
// written out here so that this logic (and its unit tests) builds without any
// Xen header.  Each value is the one of Xen 4.17's public headers or of the
// libxc migration stream (docs/specs/libxc-migration-stream.pandoc); the Xen
// build of the backend re-checks every one of them against the real headers
// with static_assert (xen_abi_check.cpp), so a drift breaks the build instead
// of a guest.
//
// Only 64-bit PV guests on a 64-bit toolstack are handled: the layouts below
// are the x86_64 ones.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastmig::xen {

// Machine and pseudo-physical frame numbers.  Xen's INVALID_MFN / a p2m
// entry of a ballooned-out page: all ones.
using Mfn = std::uint64_t;
constexpr std::uint64_t kInvalidFrame = ~std::uint64_t{0};

// ---- Page types: XEN_DOMCTL_PFINFO_* (public/domctl.h), bits 28..31 of the
// values xc_get_pfn_type_batch() returns.
constexpr unsigned kPfinfoShift = 28;
constexpr std::uint32_t kPfinfoNotab = 0x0u << 28;
constexpr std::uint32_t kPfinfoL1 = 0x1u << 28;
constexpr std::uint32_t kPfinfoL2 = 0x2u << 28;
constexpr std::uint32_t kPfinfoL3 = 0x3u << 28;
constexpr std::uint32_t kPfinfoL4 = 0x4u << 28;
constexpr std::uint32_t kPfinfoLtabTypeMask = 0x7u << 28;
constexpr std::uint32_t kPfinfoPinned = 0x1u << 31; // XEN_DOMCTL_PFINFO_LPINTAB
constexpr std::uint32_t kPfinfoXtab = 0xfu << 28;   // no page (ballooned out)
constexpr std::uint32_t kPfinfoXalloc = 0xeu << 28; // allocate only, no data (Xen 4.2..4.5)
constexpr std::uint32_t kPfinfoBroken = 0xdu << 28; // machine page broken (MCE)
constexpr std::uint32_t kPfinfoMask = 0xfu << 28;

// ---- Page-table entries (x86_64, 4 levels).
constexpr std::uint64_t kPtePresent = 1ull << 0; // _PAGE_PRESENT
constexpr std::uint64_t kPtePse = 1ull << 7;     // _PAGE_PSE in L2/L3 (PAT in L1)
constexpr std::uint64_t kPteFrameMask = 0x000ffffffffff000ull; // bits 12..51
constexpr unsigned kPtesPerPage = 512;
// L4 slots Xen owns in a 64-bit PV guest's top-level table
// (HYPERVISOR_VIRT_START..END = 0xffff800000000000..0xffff87ffffffffff,
// shifted by 39): Xen rebuilds them at the destination, so they travel as 0.
constexpr unsigned kL4XenFirstSlot = 256;
constexpr unsigned kL4XenLastSlot = 271;

// ---- struct vcpu_guest_context (arch-x86/xen.h, x86_64 layout).
namespace vcpu_ctx {
constexpr std::size_t kSize = 5168;
constexpr std::size_t kFlags = 512;      // unsigned long flags (VGCF_*)
constexpr std::size_t kRdx = 616;        // user_regs.rdx: start_info mfn at suspend
constexpr std::size_t kGdtFrames = 4832; // unsigned long gdt_frames[16]
constexpr unsigned kGdtFramesMax = 16;
constexpr std::size_t kGdtEnts = 4960;   // unsigned long gdt_ents
constexpr std::size_t kCtrlreg = 4984;   // unsigned long ctrlreg[8]
constexpr std::uint64_t kFlagOnline = 32; // VGCF_online
// FIRST_RESERVED_GDT_ENTRY: entries above belong to Xen.
constexpr std::uint64_t kMaxGdtEntries = 7168;
} // namespace vcpu_ctx

// ---- struct start_info (public/xen.h, x86_64 layout).
namespace start_info {
constexpr std::size_t kNrPages = 32;
constexpr std::size_t kSharedInfo = 40; // machine address of shared info
constexpr std::size_t kFlags = 48;      // uint32_t
constexpr std::size_t kStoreMfn = 56;
constexpr std::size_t kStoreEvtchn = 64; // uint32_t
constexpr std::size_t kConsoleMfn = 72;  // console.domU.mfn
constexpr std::size_t kConsoleEvtchn = 80; // uint32_t
} // namespace start_info

// ---- struct shared_info (public/xen.h + arch-x86/xen.h, x86_64 layout).
namespace shinfo {
constexpr std::size_t kSize = 4096;       // one page; the record is the page
constexpr std::size_t kVcpuInfo = 0;      // struct vcpu_info[32], 64 bytes each
constexpr unsigned kLegacyVcpus = 32;     // XEN_LEGACY_MAX_VCPUS
constexpr std::size_t kVcpuInfoSize = 64;
constexpr std::size_t kVcpuPendingSel = 8; // vcpu_info.evtchn_pending_sel
constexpr std::size_t kEvtchnPending = 2048; // unsigned long[64]
constexpr std::size_t kEvtchnMask = 2560;    // unsigned long[64]
constexpr std::size_t kEvtchnWordsBytes = 512;
constexpr std::size_t kArch = 3088;          // struct arch_shared_info
constexpr std::size_t kArchSize = 48;
constexpr std::size_t kMaxPfn = 3088;        // arch.max_pfn: p2m entries
constexpr std::size_t kFrameListList = 3096; // arch.pfn_to_mfn_frame_list_list
constexpr std::size_t kP2mCr3 = 3112;        // arch.p2m_cr3: linear p2m list
} // namespace shinfo

// ---- The domain's CPU policy as Xen serialises it (X86_CPUID_POLICY and
// X86_MSR_POLICY records): arrays of xen_cpuid_leaf_t { u32 leaf, subleaf,
// a, b, c, d } and xen_msr_entry_t { u32 idx, flags; u64 val }
// (public/arch-x86/xen.h).
namespace cpu_policy {
constexpr std::size_t kLeafSize = 24;
constexpr std::size_t kMsrSize = 16;
// Bounds for hostile input, far above what Xen 4.17 serialises (about a
// hundred leaves and a handful of MSRs).
constexpr std::size_t kMaxLeaves = 4096;
constexpr std::size_t kMaxMsrs = 4096;
} // namespace cpu_policy

// ---- libxc migration stream v2/v3 record types (xg_sr_stream_format.h).
// fastmig uses them as PLATFORM_STATE state_type, with the libxc record body
// as the blob (docs/stream-format.md, interoperability).
namespace rec {
constexpr std::uint32_t kX86PvInfo = 0x02;
constexpr std::uint32_t kX86PvP2mFrames = 0x03;
constexpr std::uint32_t kX86PvVcpuBasic = 0x04;
constexpr std::uint32_t kX86PvVcpuExtended = 0x05;
constexpr std::uint32_t kX86PvVcpuXsave = 0x06;
constexpr std::uint32_t kSharedInfo = 0x07;
constexpr std::uint32_t kX86TscInfo = 0x08;
constexpr std::uint32_t kX86PvVcpuMsrs = 0x0c;
constexpr std::uint32_t kX86CpuidPolicy = 0x11;
constexpr std::uint32_t kX86MsrPolicy = 0x12;
// fastmig's own: the page types libxc carries in every PAGE_DATA record
// (fastmig's PAGE_BATCH has no type field), for the pages whose final type
// is not NOTAB.  Outside libxc's numbering (0x00..0x12) on purpose.
constexpr std::uint32_t kFastmigPfnTypes = 0x00010001;
} // namespace rec

} // namespace fastmig::xen
