#include "stream/domain/xen/pv_save_page.hpp"

#include "stream/domain/xen/bytes.hpp"
#include "stream/domain/xen/pv_pagetable.hpp"

#include <algorithm>

namespace fastmig::xen {

PageOutcome prepare_page(Pfn pfn, PageType type, std::span<const std::uint8_t> mapped, std::span<std::uint8_t> out,
                         const FrameTranslation& t, bool paused, std::string* why)
{
    if (out.size() != kPageSize)
        throw Error("page buffer for pfn " + hex(pfn) + " is not one page");
    if (!page_type_known(type))
        throw Error("pfn " + hex(pfn) + " has " + page_type_name(type));
    if (!page_type_has_data(type)) {
        std::fill(out.begin(), out.end(), 0);
        return PageOutcome::no_data;
    }
    if (mapped.size() != kPageSize)
        throw Error("pfn " + hex(pfn) + " (" + page_type_name(type) + ") was not mapped");
    unsigned level = page_type_level(type);
    if (level == 0) {
        std::copy(mapped.begin(), mapped.end(), out.begin());
        return PageOutcome::copied;
    }
    std::string reason;
    if (normalise_pagetable(level, mapped, out, t, &reason) == Normalised::ok)
        return PageOutcome::normalised;
    if (paused)
        throw Error("page table at pfn " + hex(pfn) + " (" + page_type_name(type) +
                    ") does not translate while the guest is suspended: " + reason);
    if (why)
        *why = reason;
    std::fill(out.begin(), out.end(), 0);
    return PageOutcome::deferred;
}

} // namespace fastmig::xen
