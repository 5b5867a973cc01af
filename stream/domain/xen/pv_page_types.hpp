// Page types of a PV guest (XEN_DOMCTL_PFINFO_*): which pages carry data,
// which are page tables to translate, which have no page at all, and the
// per-pfn map the backend keeps so that the destination learns every page's
// final type (libxc sends the type with each page; fastmig sends the map of
// the non-plain pages once, with the platform state, because the last type a
// page had when it was read, while the guest was suspended, is its type).
#pragma once

#include "stream/domain.hpp"
#include "stream/domain/xen/pv_abi.hpp"

#include <cstdint>
#include <span>
#include <vector>

namespace fastmig::xen {

using PageType = std::uint32_t; // an XEN_DOMCTL_PFINFO_* value

// One of the types Xen reports (plain, L1..L4 pinned or not, XTAB, XALLOC,
// BROKEN); anything else is a corrupt stream or an unknown hypervisor.
bool page_type_known(PageType t);
// The page has contents to migrate (plain page or page table).
bool page_type_has_data(PageType t);
// The destination must allocate a page for it (has data, or XALLOC).
bool page_type_to_populate(PageType t);
// 1..4 for a page table of that level, 0 otherwise.
unsigned page_type_level(PageType t);
bool page_type_pinned(PageType t);
// "L2 (pinned)", "XTAB", ... for errors.
std::string page_type_name(PageType t);

// The type of every pfn of a guest, NOTAB unless set.  Concurrent set() of
// different pfns from several threads is safe (one byte each); the same pfn
// is never read twice at once by the engine (one round at a time).
class PfnTypeMap {
public:
    explicit PfnTypeMap(std::uint64_t nr_pfns = 0) : types_(nr_pfns, 0) {}

    std::uint64_t size() const { return types_.size(); }
    // Throws Error for an unknown type or a pfn beyond size().
    void set(Pfn pfn, PageType t);
    PageType get(Pfn pfn) const { return PageType(types_[pfn]) << kPfinfoShift; }
    std::uint64_t count_not_plain() const;

    // The non-plain entries as PLATFORM_STATE blobs of type
    // rec::kFastmigPfnTypes, each at most max_entries long (docs: a blob is
    // { u32 count, u32 reserved, u64 entry[count] }, entry = pfn | type << 32,
    // the encoding of libxc's PAGE_DATA pfn list).  Always at least one blob,
    // so that the destination can tell "all plain" from "map missing".
    std::vector<StateBlob> encode(std::size_t max_entries) const;
    // Applies one blob (hostile input: bounds, types and length checked;
    // Error names the offending entry).
    void apply(std::span<const std::uint8_t> blob);

private:
    std::vector<std::uint8_t> types_; // PFINFO >> 28
};

} // namespace fastmig::xen
