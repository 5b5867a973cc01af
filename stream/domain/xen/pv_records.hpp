// The platform-state records of a 64-bit PV guest, as the Xen backend
// produces them (save_state) and consumes them (restore_state).  The engine
// carries them as opaque PLATFORM_STATE blobs; each blob's state_type is the
// libxc record type and its bytes are the libxc record body, so that a
// converter to and from a stock libxc stream stays mechanical
// (stream/domain/xen/README.md lists the layouts).
//
// Everything here is pure: vCPU and start-info frame fix-ups take a
// FrameTranslation and work on bytes, so they are tested without Xen.
#pragma once

#include "stream/domain.hpp"
#include "stream/domain/xen/pv_frames.hpp"
#include "stream/domain/xen/pv_page_types.hpp"

#include <cstdint>
#include <span>
#include <vector>

namespace fastmig::xen {

// ---- X86_PV_INFO: { u8 guest_width, u8 pt_levels, u8 reserved[6] }.
StateBlob encode_pv_info(unsigned guest_width, unsigned pt_levels);
// Accepts only what this backend restores: width 8, 4 levels.  A 32-bit
// guest (4, 3) is refused by name; anything else is malformed.
void check_pv_info(std::span<const std::uint8_t> body);

// ---- X86_PV_P2M_FRAMES: { u32 start_pfn, u32 end_pfn, u64 p2m_pfns[] }:
// the pfns of the frames holding the guest's p2m (one frame per 512
// entries), for p2m entries start_pfn..end_pfn.
struct P2mFrames {
    std::uint32_t start_pfn = 0;
    std::uint32_t end_pfn = 0;
    std::vector<Pfn> frame_pfns;
};
// Number of p2m frames for a p2m of max_pfn + 1 entries.
std::uint64_t p2m_frame_count(Pfn max_pfn);
StateBlob encode_p2m_frames(const P2mFrames& f);
// Checks start <= end, the length, and that each frame pfn is within
// max_pfn; the destination accepts only start_pfn 0 and end_pfn max_pfn
// (one record covering its whole p2m).
P2mFrames parse_p2m_frames(std::span<const std::uint8_t> body, Pfn max_pfn);
// The p2m frames' mfns (frame list leaves on the source) as pfns: Error
// naming the index when one is not the guest's.
std::vector<Pfn> p2m_frame_pfns(std::span<const Mfn> frame_mfns, const FrameTranslation& t);

// ---- X86_PV_VCPU_{BASIC,EXTENDED,XSAVE,MSRS}: { u32 vcpu_id, u32 reserved,
// u8 context[] }.
StateBlob encode_vcpu_blob(std::uint32_t type, std::uint32_t vcpu_id, std::span<const std::uint8_t> context);
struct VcpuBlob {
    std::uint32_t vcpu_id = 0;
    std::span<const std::uint8_t> context;
};
// Checks the header and, for BASIC, the exact context size; max_vcpu_id is
// the destination's highest vCPU.
VcpuBlob parse_vcpu_blob(std::uint32_t type, std::span<const std::uint8_t> body, std::uint32_t max_vcpu_id);

// vCPU basic context (struct vcpu_guest_context, x86_64), in place.
// Source: vCPU 0's rdx (the start_info mfn of a suspended guest), the GDT
// frames, cr3 and cr1 (user page table) become pfns; Error when one is not
// the guest's, or gdt_ents is above Xen's limit.
void normalise_vcpu_basic(std::span<std::uint8_t> ctx, std::uint32_t vcpu_id, const FrameTranslation& t);
// Destination: the same fields back to mfns, checking that cr3/cr1 name L4
// tables and that GDT frames and start_info are plain pages; sets the
// online flag.  Returns vCPU 0's start_info pfn (kInvalidFrame for others).
Pfn localise_vcpu_basic(std::span<std::uint8_t> ctx, std::uint32_t vcpu_id, const FrameTranslation& dest,
                        const PfnTypeMap& types);

// start_info of the restored guest (one page, in place): the xenstore and
// console frames become the destination's mfns, their event channels the
// ones the toolstack allocated; nr_pages, shared_info and flags are reset
// as a freshly resumed guest expects them.
struct StartInfoResult {
    Mfn store_mfn = kInvalidFrame;
    Mfn console_mfn = kInvalidFrame;
};
StartInfoResult localise_start_info(std::span<std::uint8_t> page, const FrameTranslation& dest,
                                    std::uint32_t store_evtchn, std::uint32_t console_evtchn,
                                    std::uint64_t shared_info_maddr);

// ---- SHARED_INFO: the 4096-byte shared_info page.  Destination: copy the
// vCPU info and arch parts of the saved page into the new one, drop the p2m
// frame list list (the guest rebuilds it on resume), clear pending events
// and mask every channel (the guest re-binds its channels on resume).
void merge_shared_info(std::span<const std::uint8_t> saved, std::span<std::uint8_t> page);
// The saved page's p2m root (arch.pfn_to_mfn_frame_list_list) and size.
struct P2mRoot {
    Pfn max_pfn = 0;             // arch.max_pfn - 1
    Mfn frame_list_list = 0;     // 0 or ~0 when the guest offers no tree
    std::uint64_t p2m_cr3 = 0;   // non-zero: the guest offers a linear list
};
P2mRoot p2m_root(std::span<const std::uint8_t> shared_info_page);

// ---- X86_TSC_INFO: { u32 mode, u32 khz, u64 nsec, u32 incarnation, u32 reserved }.
struct TscInfo {
    std::uint32_t mode = 0;
    std::uint32_t khz = 0;
    std::uint64_t nsec = 0;
    std::uint32_t incarnation = 0;
};
StateBlob encode_tsc_info(const TscInfo& t);
TscInfo parse_tsc_info(std::span<const std::uint8_t> body);

// ---- X86_CPUID_POLICY / X86_MSR_POLICY: the domain's CPU policy, the
// bodies as Xen serialises them (cpu_policy:: in pv_abi.hpp).  The source
// sends what the guest saw; the destination sets exactly that, so that the
// guest's CPU features do not change under it, and a host that cannot give
// them refuses the restore instead of running the guest without them.
StateBlob encode_cpu_policy(std::uint32_t type, std::span<const std::uint8_t> entries);
// A non-empty whole number of entries, within the bound; returns the count.
std::size_t check_cpu_policy(std::uint32_t type, std::span<const std::uint8_t> body);

} // namespace fastmig::xen
