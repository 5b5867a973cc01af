// Page-table normalisation of 64-bit PV guests (4 levels).
//
// Source: every present entry's frame is an mfn; it becomes the guest's pfn
// for that mfn.  The L4 slots Xen owns are cleared (Xen rebuilds them).  A
// superpage (PSE in an L2/L3 entry) cannot be described by pfns and is an
// error, as in libxc.  A present entry naming a frame the guest does not own
// is a race while the guest runs (an update in flight): the page must be
// sent again once the guest is paused; while paused it is an error.
//
// Destination: every present entry's frame is a pfn; it becomes the mfn the
// destination allocated for it.  Pages referenced before they arrived must
// be populated first (unpopulated_references()).
#pragma once

#include "stream/domain/xen/pv_frames.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace fastmig::xen {

enum class Normalised {
    ok,    // dst holds the normalised table
    retry, // an entry did not translate (live race); `why` says which
};

// level 1..4; src and dst are one page each (they may be the same buffer).
// Throws Error for a level outside 1..4 or a superpage.
Normalised normalise_pagetable(unsigned level, std::span<const std::uint8_t> src, std::span<std::uint8_t> dst,
                               const FrameTranslation& t, std::string* why);

// The pfns that present entries of a normalised table name and that the
// destination has not populated yet (each once, in entry order).  Throws
// Error for a pfn beyond the p2m.
std::vector<Pfn> unpopulated_references(unsigned level, std::span<const std::uint8_t> page,
                                        const FrameTranslation& dest);

// In place: pfn -> mfn in every present entry.  Throws Error naming the
// entry for a pfn beyond the p2m or not populated, and for a superpage.
void localise_pagetable(unsigned level, std::span<std::uint8_t> page, const FrameTranslation& dest);

} // namespace fastmig::xen
