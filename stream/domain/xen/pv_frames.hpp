// Frame translation of a PV guest: a PV guest sees machine frames (mfns) in
// its page tables, its vCPU registers and a few structures, so the source
// rewrites them as pseudo-physical frames (pfns, which survive migration)
// and the destination rewrites them back with its own mfns.
//
// This is the pure part: the tables come from the backend (the guest's p2m
// and Xen's m2p on the source, the p2m the destination builds as it
// populates), or from a test.
#pragma once

#include "stream/domain/xen/pv_abi.hpp"
#include "stream/types.hpp"

#include <cstdint>
#include <optional>
#include <string>

namespace fastmig::xen {

class FrameTranslation {
public:
    virtual ~FrameTranslation() = default;
    // Highest pfn of the guest's p2m.
    virtual Pfn max_pfn() const = 0;
    // The guest's p2m: the mfn behind pfn (<= max_pfn), kInvalidFrame for a
    // hole (ballooned out, not yet populated).
    virtual Mfn p2m(Pfn pfn) const = 0;
    // Xen's m2p: the pfn an mfn is recorded at, kInvalidFrame when mfn is
    // beyond the machine's memory.  Unused (may throw) on the destination.
    virtual Pfn m2p(Mfn mfn) const = 0;
};

// The pfn of mfn when the guest owns it: the m2p gives a pfn within the
// p2m, and the p2m names mfn back (the check libxc calls "in the
// pseudo-physical map").  nullopt otherwise: a foreign, Xen-owned or freed
// frame, or one being remapped while the guest runs.
std::optional<Pfn> guest_pfn_of(const FrameTranslation& t, Mfn mfn);

// The mfn behind pfn on the destination; throws Error naming `what` when pfn
// is beyond the p2m or not populated.
Mfn dest_mfn_of(const FrameTranslation& t, Pfn pfn, const std::string& what);

// Why a frame did not translate, for errors: "mfn 0x1234 (m2p 0x10, p2m[0x10]
// = 0x999)".
std::string describe_mfn(const FrameTranslation& t, Mfn mfn);

} // namespace fastmig::xen
