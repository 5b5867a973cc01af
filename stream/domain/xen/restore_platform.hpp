// What XenServer's xenguest does to a domain it restores besides writing its
// memory, from the `platform/` keys xenopsd wrote for the VM
// (xcp-ng-rpms/xen SOURCES/xenguest.patch, tools/xenguest/xenguest_stubs.c:
// get_flags, configure_vcpus, stub_xc_domain_restore, set_genid), so that
// fastmig's emu-manager drop-in, which replaces xenguest under xenopsd, does
// it too.  Pure: parsing and encoding only; the Xen backend applies it
// (xen_domain.hpp: apply_restore_platform).  docs/emu-manager.md lists what
// xenguest does on restore, who does it with fastmig, and what is left out.
//
// The keys are the VM's (xapi writes them; the guest cannot), but a value
// xenguest would silently read as 0 (garbage, out of range) is an error
// here that names the key: a restore that quietly drops a VM's pinning or
// clock offset is worse than one that says why it stopped.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace fastmig::xen {

// pCPU j is bit j % 8 of byte j / 8 (libxenctrl's xc_cpumap_t).
using CpuMap = std::vector<std::uint8_t>;

struct RestorePlatform {
    // platform/hpet: HVM_PARAM_HPET_ENABLED.  Absent or empty: on, as
    // xenguest's default (xapi does not write it for every VM).
    bool hpet = true;
    // platform/timeoffset: the guest's wallclock offset from UTC, seconds
    // (xc_domain_set_time_offset, an int32 in libxenctrl).
    std::int32_t time_offset = 0;
    // platform/vcpu/N/affinity for N below platform/vcpu/number: a string of
    // '0'/'1', character j for pCPU j; hard affinity.  Unset vCPUs are absent.
    struct Affinity {
        unsigned vcpu = 0;
        CpuMap cpus;
    };
    std::vector<Affinity> affinity;
    // platform/vcpu/weight and cap for the credit scheduler; 0: left as is.
    std::uint16_t weight = 0, cap = 0;
    // platform/generation-id, "A:B" (decimal, or 0x hex): written into the
    // guest at HVM_PARAM_VM_GENERATION_ID_ADDR once its memory is restored.
    // Checked by the parse (parse_generation_id), for any guest, so a
    // malformed one is refused before the body; xenguest reads it only
    // after the body, and only when the guest has that address.
    std::string generation_id;
};

// Reads one key below the domain's platform/ ("hpet", "vcpu/0/affinity"):
// "" when absent.
using PlatformKeyReader = std::function<std::string(const std::string& key)>;

// Throws Error naming the key and its value for a malformed one.
RestorePlatform parse_restore_platform(const PlatformKeyReader& read);

// "A:B" as two non-zero u64, in the order they are stored in the guest
// (little-endian, A first); Error otherwise, as xenguest refuses the restore.
std::array<std::uint64_t, 2> parse_generation_id(const std::string& text);
// The 16 bytes xenguest's set_genid stores at the address: A then B, each
// little-endian (checked as parse_generation_id).
std::array<std::uint8_t, 16> generation_id_bytes(const std::string& text);

// One line for the log: what will be applied.
std::string describe(const RestorePlatform& p);

} // namespace fastmig::xen
