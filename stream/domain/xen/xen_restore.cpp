// The destination side: an empty, paused domain (created by the toolstack)
// built from the stream, as xc_domain_restore does: 64-bit PV, or HVM-class
// (HVM and PVH: memory by gfn, then hvm_state.hpp's plan).
#include "stream/domain/xen/bytes.hpp"
#include "stream/domain/xen/guest_checks.hpp"
#include "stream/domain/xen/hvm_state.hpp"
#include "stream/domain/xen/hvm_zero_pages.hpp"
#include "stream/domain/xen/pv_early_tables.hpp"
#include "stream/domain/xen/pv_pagetable.hpp"
#include "stream/domain/xen/pv_records.hpp"
#include "stream/domain/xen/pv_state.hpp"
#include "stream/domain/xen/xen_handles.hpp"
#include "stream/domain/xen/zero_page_clearer.hpp"

#include "stream/clock.hpp"

#include <sys/mman.h>

#include <cstdio>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <optional>

namespace fastmig::xen {

namespace {

constexpr std::size_t kBatch = 1024; // frames per populate / map call
constexpr std::size_t kPinBatch = 512;
// In the p2m while a populate call for the pfn is being built; never left
// there (replaced by the frame, or by kInvalidFrame when it fails).
constexpr Mfn kPendingFrame = kInvalidFrame - 1;

// Each step of a restore with its time, for the "restored" line: all of it
// is downtime.
class StepLog {
public:
    void lap(const std::string& what)
    {
        const std::uint64_t now = monotonic_ns();
        char ms[32];
        std::snprintf(ms, sizeof ms, " %.1f ms", double(now - t_) / 1e6);
        line_ += (line_.empty() ? "" : ", ") + what + ms;
        t_ = now;
    }
    const std::string& str() const { return line_; }

private:
    std::string line_;
    std::uint64_t t_ = monotonic_ns();
};

class XenRestoreDomain final : public XenIncomingDomain, private FrameTranslation {
public:
    XenRestoreDomain(const RestoreParams& p, std::uint64_t nr_pages, bool hvm)
        : p_(p), who_("xen:" + std::to_string(p.domid)), log_(default_log(p.log, who_)), h_(who_), hvm_(hvm)
    {
        in_phase(who_, Phase::setup, [&] { setup(nr_pages); });
    }

    std::string name() const override { return who_; }
    std::uint64_t nr_pages() const override { return p2m_.size(); }

    void write_pages(std::span<const Pfn> pfns, std::span<const std::uint8_t> src) override
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
    void write_pages_gather(std::span<const Pfn> pfns, std::span<const std::uint8_t* const> srcs) override
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

    void zero_pages(std::span<const Pfn> pfns) override { clear_pages(pfns, Phase::receive); }

    // Frames from populate_physmap are not scrubbed when a running guest
    // freed them (Xen scrubs only a dying domain's pages): allocated and
    // cleared.  PV: by the clearer's thread, off the stream's path
    // (zero_page_clearer.hpp), the rest at the end.  HVM/PVH: a zero page
    // may be a hole (MMIO, Xen's frames) that must stay unpopulated; which
    // it is comes with the source's hole map, so these wait for it (early
    // state, or the end).
    void zero_fresh_pages(std::span<const Pfn> pfns) override
    {
        for (Pfn p : pfns)
            check_pfn(p, Phase::receive);
        if (!hvm_)
            return clearer_->add(pfns);
        waiting_->add(pfns);
    }

    void read_page(Pfn pfn, std::span<std::uint8_t> dst) override { read_pages(std::span<const Pfn>(&pfn, 1), dst); }

    void read_pages(std::span<const Pfn> pfns, std::span<std::uint8_t> dst) override
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
    void early_state(const StateBlob& blob) override
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

    void restore_state(const std::vector<StateBlob>& state) override
    {
        in_phase(who_, Phase::restore, [&] { hvm_ ? restore_hvm(state) : restore(state); });
    }

    void unpause() override
    {
        if (!restored_)
            throw Error(who_, Phase::resume, "unpause before the platform state was restored");
        if (xc_domain_unpause(h_.xch, p_.domid) < 0)
            fail_errno(who_, Phase::resume, "cannot unpause the domain");
        resumed_at_ = monotonic_ns();
    }

    DomainClock clock() const override { return DomainClock{0, resumed_at_}; }

    void destroy() override
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

    RestoreResult result() const override
    {
        if (!restored_)
            throw Error(who_, Phase::restore, "store/console frames asked for before the state was restored");
        return result_;
    }

private:
    // ---- FrameTranslation over the p2m this restore builds.
    Pfn max_pfn() const override { return p2m_.size() - 1; }
    // Lock-free: page-table localisation asks this for every entry of every
    // table, in the downtime (a mutex per lookup cost ~1 us each under
    // emulation, half a second for 455 tables).  Writers (ensure_populated)
    // hold m_ among themselves and store through set_frame.
    Mfn p2m(Pfn pfn) const override
    {
        if (pfn >= p2m_.size())
            return kInvalidFrame;
        return std::atomic_ref<const Mfn>(p2m_[pfn]).load(std::memory_order_acquire);
    }
    void set_frame(Pfn pfn, Mfn mfn) { std::atomic_ref<Mfn>(p2m_[pfn]).store(mfn, std::memory_order_release); }
    Pfn m2p(Mfn) const override { throw Error("internal: no m2p lookup at the destination"); }

    void setup(std::uint64_t nr_pages)
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

    void check_pfn(Pfn pfn, Phase ph) const
    {
        if (pfn >= p2m_.size())
            throw Error(who_, ph, "pfn " + hex(pfn) + " beyond the domain's " + std::to_string(p2m_.size()) + " pages");
    }

    // Allocates frames for the pfns that have none yet (batch <= kBatch).
    void ensure_populated(std::span<const Pfn> pfns, Phase ph)
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

    void clear_pages(std::span<const Pfn> pfns, Phase ph)
    {
        unpend(pfns);
        for (std::size_t off = 0; off < pfns.size(); off += kBatch) {
            auto ps = pfns.subspan(off, std::min(kBatch, pfns.size() - off));
            ensure_populated(ps, ph);
            auto map = map_pfns(ps, PROT_READ | PROT_WRITE, ph);
            for (std::size_t i = 0; i < ps.size(); ++i)
                std::memset(map.page(i), 0, kPageSize);
            early_.forget(ps);
        }
    }

    ForeignMap map_pfns(std::span<const Pfn> pfns, int prot, Phase ph)
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
    void unpend(std::span<const Pfn> pfns)
    {
        if (waiting_)
            waiting_->written(pfns);
        if (clearer_)
            clearer_->written(pfns);
    }

    // Frames for pfns, cleared (called by WaitingZeroPages::resolve and the
    // PV clearer, with the pending lock held: a concurrent write or read of
    // one of them waits).
    void populate_zeroed(std::span<const Pfn> pfns, Phase ph)
    {
        for (std::size_t off = 0; off < pfns.size(); off += kBatch) {
            auto ps = pfns.subspan(off, std::min(kBatch, pfns.size() - off));
            ensure_populated(ps, ph);
            auto map = map_pfns(ps, PROT_READ | PROT_WRITE, ph);
            for (std::size_t i = 0; i < ps.size(); ++i)
                std::memset(map.page(i), 0, kPageSize);
        }
    }

    // libxc's HVM restore (xg_sr_restore_x86_hvm.c), as hvm_restore_plan
    // orders it, after every record and every set-once param was checked.
    void restore_hvm(const std::vector<StateBlob>& state)
    {
        StepLog steps;
        auto lap = [&](const std::string& what) { steps.lap(what); };
        HvmState st = parse_hvm_state(state, p2m_.size(), info_.max_vcpu_id);
        auto conflicts = hvm_param_conflicts(st.params, [&](std::uint32_t index) {
            std::uint64_t v = 0;
            if (xc_hvm_param_get(h_.xch, p_.domid, index, &v) < 0)
                fail_errno(who_, Phase::restore, "cannot read " + hvm_param_name(index));
            return v;
        });
        if (!conflicts.empty()) {
            std::string all;
            for (const auto& c : conflicts)
                all += (all.empty() ? "" : "; ") + c;
            throw Error("the stream's HVM params do not fit this domain: " + all);
        }
        lap("checked");
        for (const auto& step : hvm_restore_plan(st)) {
            using namespace hvm_param;
            switch (step.step) {
            case HvmStep::set_cpu_policy:
                if (set_cpu_policy(st.cpuid_policy, st.msr_policy, Phase::restore))
                    lap("CPU policy");
                break;
            case HvmStep::populate_missing: {
                // Every gfn with a page at the source and none here yet (a
                // zero page still waiting, or one never named).
                std::vector<Pfn> missing;
                for (Pfn p = 0; p < p2m_.size(); ++p)
                    if (!st.holes.hole(p) && p2m(p) == kInvalidFrame)
                        missing.push_back(p);
                waiting_->add(missing);
                const std::size_t n = waiting_->resolve(0, p2m_.size(), st.holes, [&](std::span<const Pfn> ps) {
                    populate_zeroed(ps, Phase::restore);
                });
                lap(std::to_string(n) + " zero pages populated");
                break;
            }
            case HvmStep::set_tsc:
                if (xc_domain_set_tsc_info(h_.xch, p_.domid, st.tsc->mode, st.tsc->nsec, st.tsc->khz,
                                           st.tsc->incarnation) < 0)
                    fail_errno(who_, Phase::restore, "cannot set the TSC info");
                break;
            case HvmStep::clear_page:
                if (xc_clear_domain_page(h_.xch, p_.domid, step.a) < 0)
                    fail_errno(who_, Phase::restore, "cannot clear the special page at gfn " + hex(step.a));
                break;
            case HvmStep::set_param:
                set_param(std::uint32_t(step.a), step.b);
                break;
            case HvmStep::set_store_evtchn:
                set_param(kStoreEvtchn, p_.store_evtchn);
                break;
            case HvmStep::set_console_evtchn:
                set_param(kConsoleEvtchn, p_.console_evtchn);
                lap("TSC and " + std::to_string(st.params.params.size()) + " params");
                break;
            case HvmStep::set_context: {
                std::vector<std::uint8_t> ctx = st.context;
                if (xc_domain_hvm_setcontext(h_.xch, p_.domid, ctx.data(), std::uint32_t(ctx.size())) < 0)
                    fail_errno(who_, Phase::restore, "Xen refused the HVM context (" + std::to_string(ctx.size()) +
                                                         " bytes, " + std::to_string(st.context_summary.nr_cpus) +
                                                         " vCPUs)");
                lap("HVM context");
                break;
            }
            case HvmStep::seed_grant_table:
                if (xc_dom_gnttab_seed(h_.xch, p_.domid, true, step.a, step.b, p_.console_domid, p_.store_domid) < 0)
                    fail_errno(who_, Phase::restore, "cannot seed the grant table");
                lap("grant table");
                break;
            }
        }
        result_.store_mfn = st.params.store_gfn().value_or(0);
        result_.console_mfn = st.params.console_gfn().value_or(0);
        restored_ = true;
        log_("restored: " + std::to_string(p2m_.size()) + " gfns, " + std::to_string(st.holes.count()) + " holes, " +
             std::to_string(st.context_summary.nr_cpus) + " vCPUs, store gfn " + hex(result_.store_mfn) +
             ", console gfn " + hex(result_.console_mfn) + "; " + steps.str());
    }

    void set_param(std::uint32_t index, std::uint64_t value)
    {
        if (xc_hvm_param_set(h_.xch, p_.domid, index, value) < 0)
            fail_errno(who_, Phase::restore, "cannot set " + hvm_param_name(index) + " = " + hex(value));
    }

    // Everything that xc_domain_restore does at the end of a PV stream.
    void restore(const std::vector<StateBlob>& state)
    {
        // Each step's time goes in the "restored" line: this all happens in
        // the downtime.
        StepLog steps;
        auto lap = [&](const std::string& what) { steps.lap(what); };
        PvState st = parse_pv_state(state, p2m_.size(), info_.max_vcpu_id);
        drain_clearer();
        lap("free pages cleared");
        // First, as libxc does it with the static data: the vCPUs' xsave
        // and MSR state below are checked against this policy.
        if (set_cpu_policy(st.cpuid_policy, st.msr_policy, Phase::restore))
            lap("CPU policy");
        const auto& tsc = st.tsc;
        const auto& types = st.types;
        auto& vcpus = st.vcpus;
        if (tsc && xc_domain_set_tsc_info(h_.xch, p_.domid, tsc->mode, tsc->nsec, tsc->khz, tsc->incarnation) < 0)
            fail_errno(who_, Phase::restore, "cannot set the TSC info");
        {
            auto sh = map_frames(h_.fmem, p_.domid, PROT_READ | PROT_WRITE, {xen_pfn_t(info_.shared_info_frame)},
                                 who_, Phase::restore, "the shared info page");
            merge_shared_info(st.shared_info, {sh.page(0), kPageSize});
        }
        lap("state and shared info");

        // Zero and free pages got their frames as they arrived
        // (zero_fresh_pages); a page the stream never named at all but whose
        // type says it exists still needs one, cleared.
        std::vector<Pfn> missing;
        for (Pfn p = 0; p < p2m_.size(); ++p)
            if (p2m_[p] == kInvalidFrame && page_type_to_populate(types.get(p)))
                missing.push_back(p);
        if (!missing.empty()) {
            log_("restore: " + std::to_string(missing.size()) + " pages the stream never named get cleared frames");
            clear_pages(missing, Phase::restore);
            lap(std::to_string(missing.size()) + " unnamed pages");
        }

        {
            auto tables = early_.left_at_end(types);
            localise(tables, types, Phase::restore, nullptr);
            const std::size_t early = early_.size();
            lap(std::to_string(tables.size()) + " page tables localised" +
                (early ? " (" + std::to_string(early) + " more before the suspension)" : std::string()));
        }

        for (auto& [id, v] : vcpus)
            set_vcpu(id, v.basic, v.extra, types);
        {
            char sc[48];
            std::snprintf(sc, sizeof sc, "vCPUs (setcontext %.1f ms)", double(setcontext_ns_) / 1e6);
            lap(sc);
        }

        pin_pagetables(types);
        lap("pinned");
        write_guest_p2m(st.p2m_frames, types);
        lap("guest p2m");

        if (xc_dom_gnttab_seed(h_.xch, p_.domid, false, result_.console_mfn, result_.store_mfn, p_.console_domid,
                               p_.store_domid) < 0)
            fail_errno(who_, Phase::restore, "cannot seed the grant table");
        lap("grant table");
        restored_ = true;
        log_("restored: " + std::to_string(p2m_.size()) + " pfns, " + std::to_string(types.count_not_plain()) +
             " typed pages, " + std::to_string(vcpus.size()) + " vCPUs; " + steps.str());
    }

    // The source's CPU policy, replacing the one libxl applied at
    // static_data_done (we report the policy missing there: fastmig's stream
    // brings it later, in the early state or the platform state).  A host
    // that cannot offer every feature the guest saw refuses it here, before
    // the guest runs: the restore fails and the source keeps the guest.
    // Nothing to do (false) when none was sent or this one is already set.
    bool set_cpu_policy(const std::vector<std::uint8_t>& cpuid, const std::vector<std::uint8_t>& msr, Phase ph)
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
    void localise(const std::vector<Pfn>& tables, const PfnTypeMap& types, Phase ph, EarlyTables* keep)
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

    void set_vcpu(std::uint32_t id, std::vector<std::uint8_t>& basic,
                  const std::map<std::uint32_t, std::vector<std::uint8_t>>& extra, const PfnTypeMap& types)
    {
        const std::string who = "vcpu" + std::to_string(id);
        Pfn si = localise_vcpu_basic(basic, id, *this, types);
        if (id == 0) {
            auto map = map_frames(h_.fmem, p_.domid, PROT_READ | PROT_WRITE, {xen_pfn_t(p2m(si))}, who_,
                                  Phase::restore, "the start_info page");
            auto r = localise_start_info({map.page(0), kPageSize}, *this, p_.store_evtchn, p_.console_evtchn,
                                         std::uint64_t(info_.shared_info_frame) << kPageShift);
            result_.store_mfn = r.store_mfn;
            result_.console_mfn = r.console_mfn;
        }
        vcpu_guest_context_any_t ctx{};
        std::memcpy(&ctx.x64, basic.data(), sizeof ctx.x64);
        // Xen validates the whole page-table tree under the new CR3 here
        // (vCPU 0's, at least): timed apart in the "restored" line.
        const std::uint64_t t0 = monotonic_ns();
        const int rc = xc_vcpu_setcontext(h_.xch, p_.domid, id, &ctx);
        setcontext_ns_ += monotonic_ns() - t0;
        if (rc < 0)
            fail_errno(who_, Phase::restore, "cannot set " + who + "'s context");
        for (auto& [type, body] : extra) {
            xen_domctl domctl{};
            domctl.domain = p_.domid;
            if (type == rec::kX86PvVcpuExtended) {
                if (body.size() > sizeof domctl.u.ext_vcpucontext)
                    throw StreamError(who + "'s extended context of " + std::to_string(body.size()) + " bytes");
                domctl.cmd = XEN_DOMCTL_set_ext_vcpucontext;
                std::memcpy(&domctl.u.ext_vcpucontext, body.data(), body.size());
                domctl.u.ext_vcpucontext.vcpu = id;
                domctl.u.ext_vcpucontext.size = std::uint32_t(body.size());
                if (xc_domctl(h_.xch, &domctl) < 0)
                    fail_errno(who_, Phase::restore, "cannot set " + who + "'s extended context");
                continue;
            }
            if (type == rec::kX86PvVcpuMsrs && body.size() % sizeof(xen_domctl_vcpu_msr_t))
                throw StreamError(who + "'s MSR record of " + std::to_string(body.size()) +
                                  " bytes is not a whole number of MSRs");
            HypercallBuffer hb(h_.xch, body.size(), who_, Phase::restore, who + "'s state");
            std::memcpy(hb.get(), body.data(), body.size());
            if (type == rec::kX86PvVcpuXsave) {
                domctl.cmd = XEN_DOMCTL_setvcpuextstate;
                domctl.u.vcpuextstate.vcpu = id;
                domctl.u.vcpuextstate.size = body.size();
                set_xen_guest_handle_raw(domctl.u.vcpuextstate.buffer, hb.get<std::uint64_t>());
            } else {
                domctl.cmd = XEN_DOMCTL_set_vcpu_msrs;
                domctl.u.vcpu_msrs.vcpu = id;
                domctl.u.vcpu_msrs.msr_count = std::uint32_t(body.size() / sizeof(xen_domctl_vcpu_msr_t));
                set_xen_guest_handle_raw(domctl.u.vcpu_msrs.msrs, hb.get<xen_domctl_vcpu_msr_t>());
            }
            if (xc_domctl(h_.xch, &domctl) < 0)
                fail_errno(who_, Phase::restore,
                           "cannot set " + who + (type == rec::kX86PvVcpuXsave ? "'s xsave state" : "'s MSRs"));
        }
    }

    void pin_pagetables(const PfnTypeMap& types)
    {
        std::vector<mmuext_op> ops;
        auto flush = [&] {
            if (!ops.empty() && xc_mmuext_op(h_.xch, ops.data(), unsigned(ops.size()), p_.domid) < 0)
                fail_errno(who_, Phase::restore, "cannot pin a batch of " + std::to_string(ops.size()) +
                                                     " page tables (a table Xen refuses as invalid?)");
            ops.clear();
        };
        static const unsigned cmd[] = {0, MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE, MMUEXT_PIN_L3_TABLE,
                                       MMUEXT_PIN_L4_TABLE};
        for (Pfn p = 0; p < p2m_.size(); ++p) {
            PageType t = types.get(p);
            if (!page_type_pinned(t))
                continue;
            mmuext_op op{};
            op.cmd = cmd[page_type_level(t)];
            op.arg1.mfn = p2m(p);
            ops.push_back(op);
            if (ops.size() == kPinBatch)
                flush();
        }
        flush();
    }

    // The guest finds its memory through its own p2m: overwrite it with the
    // frames this host gave (the frames holding it are plain guest pages).
    void write_guest_p2m(const P2mFrames& f, const PfnTypeMap& types)
    {
        std::vector<Pfn> pfns;
        for (std::size_t i = 0; i < f.frame_pfns.size(); ++i) {
            Pfn p = f.frame_pfns[i];
            if (types.get(p) != kPfinfoNotab)
                throw StreamError("p2m frame " + std::to_string(i) + " at pfn " + hex(p) + " has type " +
                                  page_type_name(types.get(p)));
            dest_mfn_of(*this, p, "p2m frame " + std::to_string(i));
            pfns.push_back(p);
        }
        auto map = map_pfns(pfns, PROT_READ | PROT_WRITE, Phase::restore);
        std::lock_guard<std::mutex> g(m_);
        for (Pfn p = 0; p < p2m_.size(); ++p) {
            std::uint64_t v = p2m_[p];
            std::memcpy(map.page(p / (kPageSize / 8)) + (p % (kPageSize / 8)) * 8, &v, 8);
        }
    }

    // The PV clearer's pages not cleared yet are cleared now: the guest
    // must not run on a frame another domain freed.  In the downtime, so
    // its time is logged.
    void drain_clearer()
    {
        clear_phase_ = Phase::restore;
        auto d = clearer_->drain();
        char line[160];
        std::snprintf(line, sizeof line,
                      "free pages: %llu cleared in the background, %llu at the end in %.1f ms",
                      (unsigned long long)d.background, (unsigned long long)d.at_end, double(d.ns) / 1e6);
        log_(line);
    }

    RestoreParams p_;
    const std::string who_;
    LogFn log_;
    XcHandle h_;
    const bool hvm_; // HVM or PVH: frames are gfns, holes stay unpopulated
    // HVM: zero pages the stream named and that wait for the hole map.
    std::unique_ptr<WaitingZeroPages> waiting_;
    xc_domaininfo_t info_{};
    mutable std::mutex m_;
    std::vector<Mfn> p2m_;
    EarlyTables early_; // page tables localised before the end of the stream
    // The source's CPU policy: as the latest early state sent it, and as
    // last set on the domain (the platform state's skips the call when equal).
    std::vector<std::uint8_t> early_cpuid_, early_msr_, set_cpuid_, set_msr_;
    RestoreResult result_;
    bool restored_ = false;
    std::uint64_t resumed_at_ = 0;
    std::uint64_t setcontext_ns_ = 0;
    std::atomic<Phase> clear_phase_{Phase::receive}; // the clearer's errors say where
    // PV: the zero and free pages named for the first time, cleared by its
    // thread.  Last: destroyed (joined) first, before what it uses.
    std::unique_ptr<ZeroPageClearer> clearer_;
};

} // namespace

std::unique_ptr<XenIncomingDomain> attach_restore(const RestoreParams& params, std::uint64_t nr_pages, bool hvm)
{
    return std::make_unique<XenRestoreDomain>(params, nr_pages, hvm);
}

} // namespace fastmig::xen
