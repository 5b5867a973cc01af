// The source side (xen_save_domain.hpp): the dirty log and reading pages,
// PV by frame, HVM-class by gfn.
#include "stream/domain/xen/xen_save_domain.hpp"

namespace fastmig::xen {

void XenSaveDomain::enable_dirty_log()
{
    if (xc_shadow_control(h_.xch, domid_, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, nullptr, 0) < 0) {
        // Log-dirty may already be on (another tool, a previous attempt
        // that died): switch it off and on again, as libxc does.
        int e = errno;
        if (xc_shadow_control(h_.xch, domid_, XEN_DOMCTL_SHADOW_OP_OFF, nullptr, 0) < 0 ||
            xc_shadow_control(h_.xch, domid_, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, nullptr, 0) < 0) {
            errno = e;
            fail_errno(who_, Phase::precopy, "cannot enable log-dirty mode");
        }
    }
    logdirty_ = true;
    // Start from an empty log (the engine's contract).
    DirtyBitmap scratch(nr_pages());
    clean_into(scratch);
}

void XenSaveDomain::disable_dirty_log()
{
    if (logdirty_ && xc_shadow_control(h_.xch, domid_, XEN_DOMCTL_SHADOW_OP_OFF, nullptr, 0) < 0)
        fail_errno(who_, Phase::finish, "cannot switch log-dirty mode off");
    logdirty_ = false;
}

std::uint64_t XenSaveDomain::fetch_and_clear_dirty(DirtyBitmap& out)
{
    if (!logdirty_)
        throw Error(who_, paused_ ? Phase::stop_copy : Phase::precopy, "dirty log fetched while log-dirty is off");
    if (out.size() != nr_pages())
        throw Error(who_, Phase::precopy, "dirty bitmap of " + std::to_string(out.size()) + " bits for " +
                                              std::to_string(nr_pages()) + " pages");
    clean_into(out);
    // Deferred pages go once, with the guest suspended (as libxc does):
    // handing them back every live round would keep ballooned-out pfns
    // in the dirty count forever and the precopy would never converge.
    if (paused_) {
        if (std::uint64_t deferred = deferred_->drain_into(out))
            log_(std::to_string(deferred) + " deferred pages (page tables in flux, ballooned pfns) go again");
    }
    return out.count();
}

void XenSaveDomain::read_pages(std::span<const Pfn> pfns, std::span<std::uint8_t> dst)
{
    Phase ph = paused_ ? Phase::stop_copy : Phase::precopy;
    if (dst.size() != pfns.size() * kPageSize)
        throw Error(who_, ph, "read buffer does not match the page count");
    for (std::size_t off = 0; off < pfns.size(); off += kTypeBatch) {
        std::size_t n = std::min(kTypeBatch, pfns.size() - off);
        in_phase(who_, ph, [&] { read_batch(pfns.subspan(off, n), dst.subspan(off * kPageSize, n * kPageSize)); });
    }
}

void XenSaveDomain::clean_into(DirtyBitmap& out)
{
    xc_shadow_op_stats_t stats{};
    if (xc_logdirty_control(h_.xch, domid_, XEN_DOMCTL_SHADOW_OP_CLEAN, bitmap_->raw(), max_pfn_ + 1, 0, &stats) < 0)
        fail_errno(who_, paused_ ? Phase::stop_copy : Phase::precopy, "cannot fetch the dirty log");
    std::memcpy(out.words(), bitmap_->get(), out.nr_words() * 8);
    // Bits past the last pfn must stay clear (DirtyBitmap's invariant).
    if ((max_pfn_ + 1) % 64)
        out.words()[out.nr_words() - 1] &= (std::uint64_t{1} << ((max_pfn_ + 1) % 64)) - 1;
}

void XenSaveDomain::read_batch(std::span<const Pfn> pfns, std::span<std::uint8_t> dst)
{
    if (hvm())
        return read_batch_hvm(pfns, dst);
    const std::size_t n = pfns.size();
    std::vector<xen_pfn_t> types(n);
    for (std::size_t i = 0; i < n; ++i) {
        if (pfns[i] > max_pfn_)
            throw Error("pfn " + hex(pfns[i]) + " beyond the guest's last pfn " + hex(max_pfn_));
        Mfn mfn = p2m(pfns[i]);
        types[i] = mfn;
        if (mfn == kInvalidFrame) // ballooned out now; maybe back later
            deferred_->add(pfns[i]);
    }
    std::vector<xen_pfn_t> mfns = types;
    page_types(types);
    std::vector<xen_pfn_t> to_map;
    for (std::size_t i = 0; i < n; ++i) {
        if (!page_type_known(PageType(types[i])))
            throw Error("pfn " + hex(pfns[i]) + " (mfn " + hex(mfns[i]) + ") has " +
                        page_type_name(PageType(types[i])));
        if (page_type_has_data(PageType(types[i])))
            to_map.push_back(mfns[i]);
    }
    ForeignMap map = map_frames(h_.fmem, domid_, PROT_READ, to_map, who_,
                                paused_ ? Phase::stop_copy : Phase::precopy, "guest pages");
    std::size_t m = 0;
    for (std::size_t i = 0; i < n; ++i) {
        PageType t = PageType(types[i]);
        std::span<const std::uint8_t> src;
        if (page_type_has_data(t))
            src = std::span<const std::uint8_t>(map.page(m++), kPageSize);
        std::string why;
        auto out = dst.subspan(i * kPageSize, kPageSize);
        if (prepare_page(pfns[i], t, src, out, *this, paused_, &why) == PageOutcome::deferred) {
            deferred_->add(pfns[i]);
            t = kPfinfoXtab; // as libxc: no data this time
        }
        types_.set(pfns[i], t);
    }
}

// HVM/PVH: the types by gfn say which gfns have a page (NOTAB) and which
// are holes (XTAB: MMIO, Xen's frames in the physmap; BROKEN); holes are
// read as zeros and named in the hole map, so that the destination never
// gives the guest a page it did not have.
void XenSaveDomain::read_batch_hvm(std::span<const Pfn> pfns, std::span<std::uint8_t> dst)
{
    const std::size_t n = pfns.size();
    const Phase ph = paused_ ? Phase::stop_copy : Phase::precopy;
    std::vector<xen_pfn_t> types(pfns.begin(), pfns.end());
    for (Pfn p : pfns)
        if (p > max_pfn_)
            throw Error("gfn " + hex(p) + " beyond the guest's last gfn " + hex(max_pfn_));
    page_types(types);
    std::vector<xen_pfn_t> to_map;
    for (std::size_t i = 0; i < n; ++i) {
        if (!page_type_known(PageType(types[i])))
            throw Error("gfn " + hex(pfns[i]) + " has " + page_type_name(PageType(types[i])));
        if (page_type_has_data(PageType(types[i])))
            to_map.push_back(pfns[i]);
    }
    // Per-page errors are not fatal while the guest runs: a gfn it gave
    // back (balloon) between the type query and the mapping is read
    // again, once suspended.
    std::vector<int> errs;
    ForeignMap map(h_.fmem, domid_, PROT_READ, to_map, errs);
    if (!map && !to_map.empty())
        fail_errno(who_, ph, "cannot map " + std::to_string(to_map.size()) + " guest pages");
    std::size_t m = 0;
    for (std::size_t i = 0; i < n; ++i) {
        auto out = dst.subspan(i * kPageSize, kPageSize);
        const PageType t = PageType(types[i]);
        if (!page_type_has_data(t)) {
            std::fill(out.begin(), out.end(), 0);
            holes_.set(pfns[i], t == kPfinfoXtab || t == kPfinfoBroken);
            continue;
        }
        const std::size_t k = m++;
        if (errs[k]) {
            if (paused_)
                throw Error("cannot map gfn " + hex(pfns[i]) + " of the suspended guest: " +
                            std::strerror(-errs[k]));
            std::fill(out.begin(), out.end(), 0);
            deferred_->add(pfns[i]);
        } else {
            std::memcpy(out.data(), map.page(k), kPageSize);
        }
        holes_.set(pfns[i], false);
    }
}

// XEN_DOMCTL_getpageframeinfo3: mfns (PV) or gfns (HVM) in, PFINFO types out (what libxc's
// private xc_get_pfn_type_batch does; that one is not in the public
// headers).
void XenSaveDomain::page_types(std::vector<xen_pfn_t>& arr)
{
    Phase ph = paused_ ? Phase::stop_copy : Phase::precopy;
    HypercallBuffer buf(h_.xch, arr.size() * sizeof(xen_pfn_t), who_, ph, "page types");
    std::memcpy(buf.get(), arr.data(), arr.size() * sizeof(xen_pfn_t));
    xen_domctl domctl{};
    domctl.cmd = XEN_DOMCTL_getpageframeinfo3;
    domctl.domain = domid_;
    domctl.u.getpageframeinfo3.num = arr.size();
    set_xen_guest_handle_raw(domctl.u.getpageframeinfo3.array, buf.get<xen_pfn_t>());
    if (xc_domctl(h_.xch, &domctl) < 0)
        fail_errno(who_, ph, "cannot read the types of " + std::to_string(arr.size()) + " pages");
    std::memcpy(arr.data(), buf.get(), arr.size() * sizeof(xen_pfn_t));
}

} // namespace fastmig::xen
