// The source side (xen_save_domain.hpp): the pages not worth reading, the
// holes of an HVM-class guest and the free pages its agent reports.
#include "stream/domain/xen/xen_save_domain.hpp"

namespace fastmig::xen {

std::uint64_t XenSaveDomain::free_page_hints(DirtyBitmap& out)
{
    if (out.size() != nr_pages())
        throw Error(who_, Phase::precopy, "free-page bitmap of " + std::to_string(out.size()) + " bits for " +
                                              std::to_string(nr_pages()) + " pages");
    out.clear_all();
    return in_phase(who_, paused_ ? Phase::stop_copy : Phase::precopy, [&] {
        if (hvm())
            scan_holes(out);
        agent_hints(out);
        return out.count();
    });
}

void XenSaveDomain::scan_holes(DirtyBitmap& out)
{
    std::uint64_t n = 0;
    std::vector<xen_pfn_t> batch;
    const auto deadline = std::chrono::steady_clock::now() + kHoleScanBudget;
    Pfn scanned_from = max_pfn_ + 1;
    for (Pfn block = max_pfn_ / kTypeBatch + 1; block-- > 0;) {
        if (std::chrono::steady_clock::now() >= deadline)
            break;
        const Pfn first = block * kTypeBatch;
        const Pfn end = std::min<Pfn>(max_pfn_ + 1, first + kTypeBatch);
        scanned_from = first;
        batch.resize(end - first);
        for (Pfn p = first; p < end; ++p)
            batch[p - first] = p;
        page_types(batch);
        for (Pfn p = first; p < end; ++p) {
            const PageType t = PageType(batch[p - first]);
            if (t == kPfinfoXtab || t == kPfinfoBroken) {
                out.set(p);
                holes_.set(p, true);
                ++n;
            }
        }
    }
    log_(std::to_string(n) + " of " + std::to_string(nr_pages()) + " gfns have no page (holes): sent as free");
    if (scanned_from > 0)
        log_("hole scan stopped after " + std::to_string(kHoleScanBudget.count()) + " s at gfn " +
             std::to_string(scanned_from) + ": gfns below it are typed as round 0 reads them");
}

// The guest's agent (guest_hints.hpp): asked after log-dirty is on, so a
// page the guest takes back after its scan is dirty and goes again.
void XenSaveDomain::agent_hints(DirtyBitmap& out)
{
    const std::uint32_t seq = std::uint32_t(monotonic_ns() ^ (std::uint64_t(::getpid()) << 16) ^ domid_) | 1;
    ConnectAgent connect = [&](std::string& why) -> std::optional<AgentLink> {
        std::shared_ptr<ipc::AgentChannel> ch = ipc::connect_agent(domid_, why);
        if (!ch)
            return std::nullopt;
        return AgentLink{ch, &ch->end(), ch->agent()};
    };
    KeepRam keep = [&](DirtyBitmap& hinted) { return hvm() ? keep_ram_hvm(hinted) : keep_ram_pv(hinted); };
    auto rep = collect_guest_hints(opt_.hints, paused_, seq, connect, keep, out);
    log_(rep.line);
}

// PV: a pfn is RAM when the guest's p2m gives it a frame of this machine
// whose m2p entry points back (not ballooned out, not a foreign frame).
// The p2m's own frames are never skipped: they are read for the
// destination's p2m whatever the guest says.
std::uint64_t XenSaveDomain::keep_ram_pv(DirtyBitmap& hinted) const
{
    std::uint64_t dropped = 0;
    for (Pfn p : p2m_frame_pfns_)
        if (p < hinted.size() && hinted.test(p)) {
            hinted.clear(p);
            ++dropped;
        }
    hinted.for_each_set([&](Pfn p) {
        const Mfn m = p2m(p);
        if (m == kInvalidFrame || m >= max_mfn_ || m2p(m) != p) {
            hinted.clear(p);
            ++dropped;
        }
    });
    return dropped;
}

// HVM/PVH: a gfn is RAM when Xen types it as a page (not a hole, not
// broken).  Only the hinted gfns are typed, within kHoleScanBudget (the
// stream is silent meanwhile); those not typed in time are dropped.
std::uint64_t XenSaveDomain::keep_ram_hvm(DirtyBitmap& hinted)
{
    std::vector<Pfn> gfns;
    hinted.for_each_set([&](Pfn p) { gfns.push_back(p); });
    const auto deadline = std::chrono::steady_clock::now() + kHoleScanBudget;
    std::uint64_t dropped = 0;
    std::vector<xen_pfn_t> batch;
    for (std::size_t off = 0; off < gfns.size(); off += kTypeBatch) {
        const std::size_t n = std::min(kTypeBatch, gfns.size() - off);
        const bool in_time = std::chrono::steady_clock::now() < deadline;
        if (in_time) {
            batch.assign(gfns.begin() + off, gfns.begin() + off + n);
            page_types(batch);
        }
        for (std::size_t i = 0; i < n; ++i) {
            const PageType t = in_time ? PageType(batch[i]) : kPfinfoXtab;
            if (!page_type_has_data(t) || page_type_level(t) != 0) {
                hinted.clear(gfns[off + i]);
                ++dropped;
            }
        }
    }
    if (std::chrono::steady_clock::now() >= deadline)
        log_("precopy: free-page hints: typing the hinted gfns stopped after " +
             std::to_string(kHoleScanBudget.count()) + " s; the gfns not typed go as usual");
    return dropped;
}

} // namespace fastmig::xen
