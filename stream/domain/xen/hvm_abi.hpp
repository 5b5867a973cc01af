// Constants of Xen's public ABI and of the libxc migration stream that the
// HVM/PVH part of the backend needs, written out so that its pure logic (and
// its unit tests) builds without any Xen header.  The Xen build re-checks
// every one against Xen 4.17's headers (xen_abi_check.cpp).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace fastmig::xen {

// ---- libxc record types of an HVM-class stream (xg_sr_stream_format.h).
namespace rec {
constexpr std::uint32_t kHvmContext = 0x09;
constexpr std::uint32_t kHvmParams = 0x0a;
// fastmig's own: the pfns an HVM/PVH guest has no page at (XTAB, BROKEN:
// MMIO holes, Xen's own frames mapped into the physmap), so that the
// destination never populates them.  Outside libxc's numbering.
constexpr std::uint32_t kFastmigHvmHoles = 0x00010002;
} // namespace rec

// ---- HVM params (public/hvm/params.h).
namespace hvm_param {
constexpr std::uint32_t kCallbackIrq = 0;
constexpr std::uint32_t kStorePfn = 1;
constexpr std::uint32_t kStoreEvtchn = 2;
constexpr std::uint32_t kPaeEnabled = 4; // obsolete: dropped on restore, as libxc does
constexpr std::uint32_t kIoreqPfn = 5;
constexpr std::uint32_t kBufioreqPfn = 6;
constexpr std::uint32_t kViridian = 9;
constexpr std::uint32_t kHpetEnabled = 11; // not saved: the toolstack sets it (XenServer: platform/hpet)
constexpr std::uint32_t kIdentPt = 12;
constexpr std::uint32_t kConsolePfn = 17;
constexpr std::uint32_t kConsoleEvtchn = 18;
constexpr std::uint32_t kAcpiIoportsLocation = 19;
constexpr std::uint32_t kNestedHvm = 24; // deprecated; a non-zero value still means nested virt
constexpr std::uint32_t kPagingRingPfn = 27;
constexpr std::uint32_t kMonitorRingPfn = 28;
constexpr std::uint32_t kSharingRingPfn = 29;
constexpr std::uint32_t kIoreqServerPfn = 32;
constexpr std::uint32_t kNrIoreqServerPages = 33;
constexpr std::uint32_t kVmGenerationIdAddr = 34;
constexpr std::uint32_t kX87FipWidth = 36;
constexpr std::uint32_t kVm86TssSized = 37;
constexpr std::uint32_t kMcaCap = 38;

// The params libxc's HVM save reads (write_hvm_params in
// xg_sr_save_x86_hvm.c), in its order; only non-zero ones travel.
constexpr std::array<std::uint32_t, 16> kSaved = {
    kStorePfn,        kIoreqPfn,        kBufioreqPfn,  kPagingRingPfn,        kMonitorRingPfn,    kSharingRingPfn,
    kVm86TssSized,    kConsolePfn,      kAcpiIoportsLocation, kViridian,     kIdentPt,           kVmGenerationIdAddr,
    kIoreqServerPfn,  kNrIoreqServerPages, kX87FipWidth, kMcaCap,
};
} // namespace hvm_param

// ---- The HVM context blob (public/hvm/save.h, public/arch-x86/hvm/save.h):
// { u16 typecode, u16 instance, u32 length } descriptors, each followed by
// `length` bytes, starting with HEADER and ending with END.
namespace hvm_ctx {
constexpr std::size_t kDescriptorSize = 8;
constexpr std::uint16_t kCodeEnd = 0;
constexpr std::uint16_t kCodeHeader = 1;
constexpr std::uint16_t kCodeCpu = 2;
constexpr std::uint16_t kCodeMax = 20; // HVM_SAVE_CODE_MAX in Xen 4.17
constexpr std::size_t kHeaderSize = 24; // struct hvm_save_header
constexpr std::uint32_t kMagic = 0x54381286; // HVM_FILE_MAGIC
constexpr std::uint32_t kVersion = 1;        // HVM_FILE_VERSION
// Bound for hostile input: Xen 4.17's context for 128 vCPUs is well under
// 1 MiB; the stream carries at most wire::kMaxStateBlob per blob anyway.
constexpr std::size_t kMaxSize = 4u << 20;
} // namespace hvm_ctx

// ---- XEN_X86_EMU_* (public/arch-x86/xen.h): a PVH domain emulates at most
// the local APIC; an HVM domain has the emulated platform (and a device
// model for it).
constexpr std::uint32_t kX86EmuLapic = 1u << 0;

// ---- CPUID bits that mean the guest sees hardware virtualisation (nested
// virt): leaf 1 ECX bit 5 (VMX), leaf 0x80000001 ECX bit 2 (SVM).
namespace cpuid_bits {
constexpr std::uint32_t kLeafVmx = 1;
constexpr std::uint32_t kVmxEcx = 1u << 5;
constexpr std::uint32_t kLeafSvm = 0x80000001;
constexpr std::uint32_t kSvmEcx = 1u << 2;
} // namespace cpuid_bits

} // namespace fastmig::xen
