#include "stream/domain/xen/pv_page_types.hpp"

#include "stream/domain/xen/bytes.hpp"

namespace fastmig::xen {

bool page_type_known(PageType t)
{
    if (t & ~kPfinfoMask)
        return false;
    switch (t & ~kPfinfoPinned) {
    case kPfinfoNotab:
        return !(t & kPfinfoPinned);
    case kPfinfoL1:
    case kPfinfoL2:
    case kPfinfoL3:
    case kPfinfoL4:
        return true;
    default:
        // XTAB, XALLOC and BROKEN have bit 31 set as part of their value.
        return t == kPfinfoXtab || t == kPfinfoXalloc || t == kPfinfoBroken;
    }
}

bool page_type_has_data(PageType t)
{
    return page_type_known(t) && (t == kPfinfoNotab || page_type_level(t) != 0);
}

bool page_type_to_populate(PageType t) { return page_type_has_data(t) || t == kPfinfoXalloc; }

unsigned page_type_level(PageType t)
{
    if (!page_type_known(t) || t == kPfinfoXtab || t == kPfinfoXalloc || t == kPfinfoBroken)
        return 0;
    return (t & kPfinfoLtabTypeMask) >> kPfinfoShift;
}

bool page_type_pinned(PageType t) { return page_type_level(t) != 0 && (t & kPfinfoPinned); }

std::string page_type_name(PageType t)
{
    if (!page_type_known(t))
        return "unknown type " + hex(t);
    if (t == kPfinfoXtab)
        return "XTAB";
    if (t == kPfinfoXalloc)
        return "XALLOC";
    if (t == kPfinfoBroken)
        return "BROKEN";
    if (t == kPfinfoNotab)
        return "NOTAB";
    return "L" + std::to_string(page_type_level(t)) + (page_type_pinned(t) ? " (pinned)" : "");
}

void PfnTypeMap::set(Pfn pfn, PageType t)
{
    if (pfn >= types_.size())
        throw Error("page type for pfn " + hex(pfn) + " beyond the guest's " + std::to_string(types_.size()) +
                    " pages");
    if (!page_type_known(t))
        throw Error("pfn " + hex(pfn) + " has " + page_type_name(t));
    types_[pfn] = std::uint8_t(t >> kPfinfoShift);
}

std::uint64_t PfnTypeMap::count_not_plain() const
{
    std::uint64_t n = 0;
    for (auto v : types_)
        n += v != 0;
    return n;
}

std::vector<StateBlob> PfnTypeMap::encode(std::size_t max_entries) const
{
    if (max_entries == 0)
        throw Error("page type map: zero entries per blob");
    std::vector<StateBlob> out;
    auto start = [&] {
        StateBlob b;
        b.type = rec::kFastmigPfnTypes;
        append<std::uint32_t>(b.data, 0);
        append<std::uint32_t>(b.data, 0);
        out.push_back(std::move(b));
    };
    auto finish = [](StateBlob& b) {
        store<std::uint32_t>(b.data, 0, std::uint32_t((b.data.size() - 8) / 8));
    };
    start();
    for (Pfn p = 0; p < types_.size(); ++p) {
        if (!types_[p])
            continue;
        if ((out.back().data.size() - 8) / 8 == max_entries) {
            finish(out.back());
            start();
        }
        append<std::uint64_t>(out.back().data, p | (std::uint64_t(get(p)) << 32));
    }
    finish(out.back());
    return out;
}

void PfnTypeMap::apply(std::span<const std::uint8_t> blob)
{
    if (blob.size() < 8)
        throw StreamError("page type record truncated: " + std::to_string(blob.size()) + " bytes");
    auto count = load<std::uint32_t>(blob, 0);
    if (load<std::uint32_t>(blob, 4) != 0)
        throw StreamError("page type record: reserved field not zero");
    if (blob.size() != 8 + std::uint64_t(count) * 8)
        throw StreamError("page type record: " + std::to_string(count) + " entries but " + std::to_string(blob.size()) +
                    " bytes");
    for (std::uint32_t i = 0; i < count; ++i) {
        auto e = load<std::uint64_t>(blob, 8 + std::size_t(i) * 8);
        // Bits 32..59 carry nothing (the type sits in 60..63, as libxc's
        // PAGE_DATA has it); a pfn above 2^32 is beyond any p2m we accept.
        if (e & 0x0fffffff00000000ull)
            throw StreamError("page type record entry " + std::to_string(i) + " (" + hex(e) + ") is malformed");
        Pfn pfn = e & 0xffffffffull;
        auto t = PageType(e >> 32);
        if (pfn >= types_.size() || !page_type_known(t))
            throw StreamError("page type record entry " + std::to_string(i) + ": pfn " + hex(pfn) + " with " +
                              page_type_name(t) + " (guest of " + std::to_string(types_.size()) + " pages)");
        set(pfn, t);
    }
}

} // namespace fastmig::xen
