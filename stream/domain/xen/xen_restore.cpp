// XenRestoreDomain (xen_restore_domain.hpp) during the stream: the pages,
// the early state, the frames.
#include "stream/domain/xen/xen_restore_domain.hpp"

#include "stream/domain/xen/bytes.hpp"
#include "stream/domain/xen/guest_checks.hpp"
#include "stream/domain/xen/hvm_state.hpp"
#include "stream/domain/xen/pv_pagetable.hpp"
#include "stream/domain/xen/pv_state.hpp"

#include "stream/clock.hpp"

#include <sys/mman.h>

#include <cstdio>

#include <algorithm>

namespace fastmig::xen {

XenRestoreDomain::XenRestoreDomain(const RestoreParams& p, std::uint64_t nr_pages, bool hvm)
    : p_(p), who_("xen:" + std::to_string(p.domid)), log_(default_log(p.log, who_)), h_(who_), hvm_(hvm)
{
    in_phase(who_, Phase::setup, [&] { setup(nr_pages); });
}

void XenRestoreDomain::write_pages(std::span<const Pfn> pfns, std::span<const std::uint8_t> src)
{
    if (src.size() != pfns.size() * kPageSize)
        throw Error(who_, Phase::receive, "write buffer does not match the page count");
    std::vector<const std::uint8_t*> srcs(pfns.size());
    for (std::size_t i = 0; i < pfns.size(); ++i)
        srcs[i] = src.data() + i * kPageSize;
    write_pages_gather(pfns, srcs);
}

// One mapping for a whole batch, wherever its bytes lie: each mapping
// costs hypercalls and a TLB flush at unmap, far more than the copies.
void XenRestoreDomain::write_pages_gather(std::span<const Pfn> pfns, std::span<const std::uint8_t* const> srcs)
{
    if (pfns.size() != srcs.size())
        throw Error(who_, Phase::receive, "gathered write of " + std::to_string(pfns.size()) + " pfns with " +
                                              std::to_string(srcs.size()) + " pages");
    unpend(pfns);
    for (std::size_t off = 0; off < pfns.size(); off += kBatch) {
        std::size_t n = std::min(kBatch, pfns.size() - off);
        auto ps = pfns.subspan(off, n);
        ensure_populated(ps, Phase::receive);
        auto map = map_pfns(ps, PROT_READ | PROT_WRITE, Phase::receive);
        for (std::size_t i = 0; i < n; ++i)
            std::memcpy(map.page(i), srcs[off + i], kPageSize);
        early_.forget(ps);
    }
}

// Frames from populate_physmap are not scrubbed when a running guest
// freed them (Xen scrubs only a dying domain's pages): allocated and
// cleared.  PV: by the clearer's thread, off the stream's path
// (zero_page_clearer.hpp), the rest at the end.  HVM/PVH: a zero page
// may be a hole (MMIO, Xen's frames) that must stay unpopulated; which
// it is comes with the source's hole map, so these wait for it (early
// state, or the end).
void XenRestoreDomain::zero_fresh_pages(std::span<const Pfn> pfns)
{
    for (Pfn p : pfns)
        check_pfn(p, Phase::receive);
    if (!hvm_)
        return clearer_->add(pfns);
    waiting_->add(pfns);
}

void XenRestoreDomain::read_pages(std::span<const Pfn> pfns, std::span<std::uint8_t> dst)
{
    if (dst.size() != pfns.size() * kPageSize)
        throw Error(who_, Phase::receive, "read buffer does not match the page count");
    if (clearer_)
        clearer_->settle(pfns); // a page still to clear reads as zeros, cleared now
    std::vector<Pfn> present;
    std::vector<std::size_t> where;
    for (std::size_t i = 0; i < pfns.size(); ++i) {
        check_pfn(pfns[i], Phase::receive);
        if (p2m(pfns[i]) == kInvalidFrame)
            std::fill_n(dst.begin() + i * kPageSize, kPageSize, 0); // never written: zeros
        else if (early_.sent_bytes(pfns[i], dst.subspan(i * kPageSize, kPageSize)))
            continue; // localised early: the bytes the stream sent, as a delta expects
        else {
            present.push_back(pfns[i]);
            where.push_back(i);
        }
    }
    for (std::size_t off = 0; off < present.size(); off += kBatch) {
        std::size_t n = std::min(kBatch, present.size() - off);
        auto map = map_pfns(std::span<const Pfn>(present).subspan(off, n), PROT_READ, Phase::receive);
        for (std::size_t i = 0; i < n; ++i)
            std::memcpy(dst.data() + where[off + i] * kPageSize, map.page(i), kPageSize);
    }
}

// PV: the source's page types as of its latest precopy round (blob
// FASTMIG_PFN_TYPES): the page tables not local yet are localised now,
// during precopy, instead of at the end (pv_early_tables.hpp).
// HVM/PVH: its hole map (FASTMIG_HVM_HOLES): the zero pages waiting in
// the blob's range that are no holes get their frames now.  Both: the
// CPU policy that precedes them is set the first time.
void XenRestoreDomain::early_state(const StateBlob& blob)
{
    in_phase(who_, Phase::receive, [&] {
        if (hvm_ && blob.type == rec::kFastmigHvmHoles) {
            const std::uint64_t t0 = monotonic_ns();
            if (set_cpu_policy(early_cpuid_, early_msr_, Phase::receive))
                log_("early: CPU policy set, before the suspension");
            auto h = parse_hole_blob(blob.data, p2m_.size());
            HoleMap holes(p2m_.size());
            for (auto [first, n] : h.runs)
                holes.set_holes(first, n);
            std::size_t n = waiting_->resolve(h.start, h.end, holes, [&](std::span<const Pfn> ps) {
                populate_zeroed(ps, Phase::receive);
            });
            if (n) {
                char line[128];
                std::snprintf(line, sizeof line, "early: %zu zero pages populated in %.1f ms, before the suspension",
                              n, double(monotonic_ns() - t0) / 1e6);
                log_(line);
            }
            return;
        }
        // The source's CPU policy comes before each page-type map: kept
        // here, set (once) when the map follows.
        if (blob.type == rec::kX86CpuidPolicy || blob.type == rec::kX86MsrPolicy) {
            check_cpu_policy(blob.type, blob.data);
            (blob.type == rec::kX86CpuidPolicy ? early_cpuid_ : early_msr_) = blob.data;
            return;
        }
        if (blob.type != rec::kFastmigPfnTypes || hvm_)
            throw StreamError("early state of type " + hex(blob.type) + (hvm_
                                  ? ": an HVM/PVH destination knows only the CPU policy and the hole map"
                                  : ": a PV destination knows only the CPU policy and the page types"));
        const std::uint64_t p0 = monotonic_ns();
        if (set_cpu_policy(early_cpuid_, early_msr_, Phase::receive)) {
            char line[96];
            std::snprintf(line, sizeof line, "early: CPU policy set in %.1f ms, before the suspension",
                          double(monotonic_ns() - p0) / 1e6);
            log_(line);
        }
        const std::uint64_t t0 = monotonic_ns();
        PfnTypeMap types(p2m_.size());
        types.apply(blob.data);
        auto tables = early_.to_localise(types);
        // A table still to clear is cleared first (it is read), and the
        // clearer stays quiet meanwhile: every p2m entry a table refers
        // to is settled, none half-populated.
        clearer_->settle(tables);
        clearer_->quiet([&] { localise(tables, types, Phase::receive, &early_); });
        char line[160];
        std::snprintf(line, sizeof line, "early: %zu page tables localised in %.1f ms, before the suspension",
                      tables.size(), double(monotonic_ns() - t0) / 1e6);
        log_(line);
    });
}

void XenRestoreDomain::unpause()
{
    if (!restored_)
        throw Error(who_, Phase::resume, "unpause before the platform state was restored");
    if (xc_domain_unpause(h_.xch, p_.domid) < 0)
        fail_errno(who_, Phase::resume, "cannot unpause the domain");
    resumed_at_ = monotonic_ns();
}

void XenRestoreDomain::destroy()
{
    if (clearer_)
        clearer_->stop(); // its thread populates no more
    if (!p_.destroy_on_failure) {
        log_("restore failed: the domain is left paused for the toolstack that created it to destroy");
        return;
    }
    if (xc_domain_destroy(h_.xch, p_.domid) < 0)
        fail_errno(who_, Phase::restore, "cannot destroy the half-built domain");
}

RestoreResult XenRestoreDomain::result() const
{
    if (!restored_)
        throw Error(who_, Phase::restore, "store/console frames asked for before the state was restored");
    return result_;
}

// Lock-free: page-table localisation asks this for every entry of every
// table, in the downtime (a mutex per lookup cost ~1 us each under
// emulation, half a second for 455 tables).  Writers (ensure_populated)
// hold m_ among themselves and store through set_frame.
Mfn XenRestoreDomain::p2m(Pfn pfn) const
{
    if (pfn >= p2m_.size())
        return kInvalidFrame;
    return std::atomic_ref<const Mfn>(p2m_[pfn]).load(std::memory_order_acquire);
}

void XenRestoreDomain::setup(std::uint64_t nr_pages)
{
    if (nr_pages == 0 || nr_pages > (std::uint64_t{1} << 32))
        throw Error("a stream of " + std::to_string(nr_pages) + " pages is not a guest this backend builds");
    auto info = domain_info(h_.xch, p_.domid, who_, Phase::setup);
    if (auto why = target_refusal({hvm_, bool(info.flags & XEN_DOMINF_hvm_guest),
                                   info.arch_config.emulation_flags, info.max_vcpu_id}))
        throw Error(*why);
    if (info.flags & (XEN_DOMINF_dying | XEN_DOMINF_shutdown))
        throw Error("the target domain is " + describe_state(info));
    info_ = info;
    if (hvm_) {
        p2m_.assign(nr_pages, kInvalidFrame);
        waiting_ = std::make_unique<WaitingZeroPages>(nr_pages);
        return;
    }
    unsigned width = 0;
    if (xc_domain_get_guest_width(h_.xch, p_.domid, &width) < 0)
        fail_errno(who_, Phase::setup, "cannot read the target domain's width");
    if (width != 8) {
        xen_domctl domctl{};
        domctl.cmd = XEN_DOMCTL_set_address_size;
        domctl.domain = p_.domid;
        domctl.u.address_size.size = 64;
        if (xc_domctl(h_.xch, &domctl) < 0)
            fail_errno(who_, Phase::setup, "cannot make the target domain 64-bit");
    }
    p2m_.assign(nr_pages, kInvalidFrame);
    clearer_ = std::make_unique<ZeroPageClearer>(nr_pages, [this](std::span<const Pfn> ps) {
        populate_zeroed(ps, clear_phase_);
        early_.forget(ps);
    });
}

void XenRestoreDomain::check_pfn(Pfn pfn, Phase ph) const
{
    if (pfn >= p2m_.size())
        throw Error(who_, ph, "pfn " + hex(pfn) + " beyond the domain's " + std::to_string(p2m_.size()) + " pages");
}

// Allocates frames for the pfns that have none yet (batch <= kBatch).
void XenRestoreDomain::ensure_populated(std::span<const Pfn> pfns, Phase ph)
{
    std::lock_guard<std::mutex> g(m_);
    std::vector<xen_pfn_t> todo;
    std::vector<Pfn> which;
    for (Pfn p : pfns) {
        check_pfn(p, ph);
        if (p2m_[p] == kInvalidFrame) {
            set_frame(p, kPendingFrame); // a pfn twice in pfns is populated once
            todo.push_back(p);
            which.push_back(p);
        }
    }
    if (todo.empty())
        return;
    // For a PV guest the array goes in as pfns and comes back as mfns;
    // an HVM guest's frames are its gfns (Xen leaves the array alone).
    if (xc_domain_populate_physmap_exact(h_.xch, p_.domid, todo.size(), 0, 0, todo.data()) < 0) {
        int e = errno;
        for (Pfn p : which)
            set_frame(p, kInvalidFrame);
        errno = e;
        fail_errno(who_, ph, "cannot populate " + std::to_string(todo.size()) + " pages from pfn " + hex(which[0]));
    }
    if (hvm_) {
        for (Pfn p : which)
            set_frame(p, p);
        return;
    }
    for (std::size_t i = 0; i < todo.size(); ++i)
        set_frame(which[i], todo[i] == 0 ? kInvalidFrame : todo[i]);
    for (std::size_t i = 0; i < todo.size(); ++i)
        if (todo[i] == kInvalidFrame || todo[i] == 0)
            throw Error(who_, ph, "Xen populated pfn " + hex(which[i]) + " with no frame");
}

void XenRestoreDomain::clear_pages(std::span<const Pfn> pfns, Phase ph)
{
    unpend(pfns);
    populate_zeroed(pfns, ph);
    early_.forget(pfns);
}

ForeignMap XenRestoreDomain::map_pfns(std::span<const Pfn> pfns, int prot, Phase ph)
{
    std::vector<xen_pfn_t> mfns;
    mfns.reserve(pfns.size());
    for (Pfn p : pfns)
        mfns.push_back(p2m(p));
    return map_frames(h_.fmem, p_.domid, prot, mfns, who_, ph, "the domain's pages");
}

// A page written (or zeroed) now is no longer waiting for the hole map
// (hvm_zero_pages.hpp): taken off first, so a later resolution cannot
// wipe what is written.
void XenRestoreDomain::unpend(std::span<const Pfn> pfns)
{
    if (waiting_)
        waiting_->written(pfns);
    if (clearer_)
        clearer_->written(pfns);
}

// Frames for pfns, cleared (called by WaitingZeroPages::resolve and the
// PV clearer, with the pending lock held: a concurrent write or read of
// one of them waits).
void XenRestoreDomain::populate_zeroed(std::span<const Pfn> pfns, Phase ph)
{
    for (std::size_t off = 0; off < pfns.size(); off += kBatch) {
        auto ps = pfns.subspan(off, std::min(kBatch, pfns.size() - off));
        ensure_populated(ps, ph);
        auto map = map_pfns(ps, PROT_READ | PROT_WRITE, ph);
        for (std::size_t i = 0; i < ps.size(); ++i)
            std::memset(map.page(i), 0, kPageSize);
    }
}

// The source's CPU policy, replacing the one libxl applied at
// static_data_done (we report the policy missing there: fastmig's stream
// brings it later, in the early state or the platform state).  A host
// that cannot offer every feature the guest saw refuses it here, before
// the guest runs: the restore fails and the source keeps the guest.
// Nothing to do (false) when none was sent or this one is already set.
bool XenRestoreDomain::set_cpu_policy(const std::vector<std::uint8_t>& cpuid, const std::vector<std::uint8_t>& msr,
                                      Phase ph)
{
    if ((cpuid.empty() && msr.empty()) || (cpuid == set_cpuid_ && msr == set_msr_))
        return false;
    std::vector<xen_cpuid_leaf_t> leaves(cpuid.size() / sizeof(xen_cpuid_leaf_t));
    std::vector<xen_msr_entry_t> msrs(msr.size() / sizeof(xen_msr_entry_t));
    if (!cpuid.empty())
        std::memcpy(leaves.data(), cpuid.data(), leaves.size() * sizeof(xen_cpuid_leaf_t));
    if (!msr.empty())
        std::memcpy(msrs.data(), msr.data(), msrs.size() * sizeof(xen_msr_entry_t));
    std::uint32_t err_leaf = ~0u, err_subleaf = ~0u, err_msr = ~0u;
    if (xc_set_domain_cpu_policy(h_.xch, p_.domid, std::uint32_t(leaves.size()), leaves.data(),
                                 std::uint32_t(msrs.size()), msrs.data(), &err_leaf, &err_subleaf,
                                 &err_msr) < 0) {
        std::string where;
        if (err_leaf != ~0u)
            where = " (CPUID leaf " + hex(err_leaf) + " subleaf " + hex(err_subleaf) + ")";
        else if (err_msr != ~0u)
            where = " (MSR " + hex(err_msr) + ")";
        fail_errno(who_, ph,
                   "this host refuses the guest's CPU policy" + where +
                       ": it cannot offer every CPU feature the guest had at the source");
    }
    set_cpuid_ = cpuid;
    set_msr_ = msr;
    log_("CPU policy of the source set: " + std::to_string(leaves.size()) + " CPUID leaves, " +
         std::to_string(msrs.size()) + " MSRs");
    return true;
}

// In place, pfns to this host's mfns, in the page tables `tables` (typed
// in `types`).  With `keep`, each page's bytes are kept there first: an
// early localisation the stream may still send deltas against.
void XenRestoreDomain::localise(const std::vector<Pfn>& tables, const PfnTypeMap& types, Phase ph,
                                EarlyTables* keep)
{
    for (std::size_t off = 0; off < tables.size(); off += kBatch) {
        auto ps = std::span<const Pfn>(tables).subspan(off, std::min(kBatch, tables.size() - off));
        ensure_populated(ps, ph);
        auto map = map_pfns(ps, PROT_READ | PROT_WRITE, ph);
        for (std::size_t i = 0; i < ps.size(); ++i) {
            std::span<std::uint8_t> page(map.page(i), kPageSize);
            unsigned level = page_type_level(types.get(ps[i]));
            auto need = unpopulated_references(level, page, *this);
            for (std::size_t k = 0; k < need.size(); k += kBatch)
                ensure_populated(std::span<const Pfn>(need).subspan(k, std::min(kBatch, need.size() - k)), ph);
            if (keep)
                keep->keep(ps[i], page);
            try {
                localise_pagetable(level, page, *this);
            } catch (const Error& e) {
                throw Error("page table at pfn " + hex(ps[i]) + ": " + e.cause());
            }
        }
    }
}

std::unique_ptr<XenIncomingDomain> attach_restore(const RestoreParams& params, std::uint64_t nr_pages, bool hvm)
{
    return std::make_unique<XenRestoreDomain>(params, nr_pages, hvm);
}

} // namespace fastmig::xen
