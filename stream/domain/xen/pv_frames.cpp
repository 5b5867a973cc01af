#include "stream/domain/xen/pv_frames.hpp"

#include "stream/domain/xen/bytes.hpp"

namespace fastmig::xen {

std::optional<Pfn> guest_pfn_of(const FrameTranslation& t, Mfn mfn)
{
    if (mfn == kInvalidFrame)
        return std::nullopt;
    Pfn pfn = t.m2p(mfn);
    if (pfn == kInvalidFrame || pfn > t.max_pfn() || t.p2m(pfn) != mfn)
        return std::nullopt;
    return pfn;
}

Mfn dest_mfn_of(const FrameTranslation& t, Pfn pfn, const std::string& what)
{
    if (pfn > t.max_pfn())
        throw Error(what + " names pfn " + hex(pfn) + ", beyond the guest's last pfn " + hex(t.max_pfn()));
    Mfn mfn = t.p2m(pfn);
    if (mfn == kInvalidFrame)
        throw Error(what + " names pfn " + hex(pfn) + ", which has no page at the destination");
    return mfn;
}

std::string describe_mfn(const FrameTranslation& t, Mfn mfn)
{
    std::string s = "mfn " + hex(mfn);
    Pfn pfn = t.m2p(mfn);
    if (pfn == kInvalidFrame)
        return s + " (beyond the machine's m2p)";
    s += " (m2p " + hex(pfn);
    if (pfn > t.max_pfn())
        return s + ", beyond the guest's last pfn " + hex(t.max_pfn()) + ": not the guest's)";
    return s + ", but p2m[" + hex(pfn) + "] = " + hex(t.p2m(pfn)) + ": not the guest's)";
}

} // namespace fastmig::xen
