#include "stream/domain/xen/pv_pagetable.hpp"

#include "stream/domain/xen/bytes.hpp"

#include <algorithm>

namespace fastmig::xen {

namespace {

void check_page(unsigned level, std::size_t size)
{
    if (level < 1 || level > 4)
        throw Error("page table of level " + std::to_string(level) + ": a 64-bit PV guest has levels 1 to 4");
    if (size != kPageSize)
        throw Error("page table buffer of " + std::to_string(size) + " bytes, not one page");
}

std::string entry_name(unsigned level, unsigned i, std::uint64_t pte)
{
    return "L" + std::to_string(level) + "[" + std::to_string(i) + "] = " + hex(pte);
}

void refuse_superpage(unsigned level, unsigned i, std::uint64_t pte)
{
    // In L1 entries bit 7 is PAT, not PSE.
    if (level > 1 && (pte & kPtePse))
        throw Error("superpage mapping " + entry_name(level, i, pte) +
                    ": a PV guest's superpages cannot be migrated (their frames are machine-contiguous)");
}

std::uint64_t with_frame(std::uint64_t pte, std::uint64_t frame)
{
    return (pte & ~kPteFrameMask) | ((frame << kPageShift) & kPteFrameMask);
}

} // namespace

Normalised normalise_pagetable(unsigned level, std::span<const std::uint8_t> src, std::span<std::uint8_t> dst,
                               const FrameTranslation& t, std::string* why)
{
    check_page(level, src.size());
    check_page(level, dst.size());
    for (unsigned i = 0; i < kPtesPerPage; ++i) {
        auto pte = load<std::uint64_t>(src, i * 8);
        if (level == 4 && i >= kL4XenFirstSlot && i <= kL4XenLastSlot)
            pte = 0;
        if (pte & kPtePresent) {
            refuse_superpage(level, i, pte);
            Mfn mfn = (pte & kPteFrameMask) >> kPageShift;
            auto pfn = guest_pfn_of(t, mfn);
            if (!pfn) {
                if (why)
                    *why = entry_name(level, i, pte) + " names " + describe_mfn(t, mfn);
                return Normalised::retry;
            }
            pte = with_frame(pte, *pfn);
        }
        store<std::uint64_t>(dst, i * 8, pte);
    }
    return Normalised::ok;
}

std::vector<Pfn> unpopulated_references(unsigned level, std::span<const std::uint8_t> page,
                                        const FrameTranslation& dest)
{
    check_page(level, page.size());
    std::vector<Pfn> out;
    for (unsigned i = 0; i < kPtesPerPage; ++i) {
        auto pte = load<std::uint64_t>(page, i * 8);
        if (!(pte & kPtePresent))
            continue;
        Pfn pfn = (pte & kPteFrameMask) >> kPageShift;
        if (pfn > dest.max_pfn())
            throw Error(entry_name(level, i, pte) + " names pfn " + hex(pfn) + ", beyond the guest's last pfn " +
                        hex(dest.max_pfn()));
        if (dest.p2m(pfn) == kInvalidFrame && std::find(out.begin(), out.end(), pfn) == out.end())
            out.push_back(pfn);
    }
    return out;
}

void localise_pagetable(unsigned level, std::span<std::uint8_t> page, const FrameTranslation& dest)
{
    check_page(level, page.size());
    for (unsigned i = 0; i < kPtesPerPage; ++i) {
        auto pte = load<std::uint64_t>(page, i * 8);
        if (!(pte & kPtePresent))
            continue;
        refuse_superpage(level, i, pte);
        Pfn pfn = (pte & kPteFrameMask) >> kPageShift;
        Mfn mfn = pfn <= dest.max_pfn() ? dest.p2m(pfn) : kInvalidFrame;
        if (mfn == kInvalidFrame) // the entry's name only for the error: this loop runs in the downtime
            mfn = dest_mfn_of(dest, pfn, entry_name(level, i, pte));
        store<std::uint64_t>(page, i * 8, with_frame(pte, mfn));
    }
}

} // namespace fastmig::xen
