// The source side: a running domain read for the engine, 64-bit PV or
// HVM-class (HVM and PVH: memory by gfn, state as HVM context and params).
// One class, XenSaveDomain, in four files: xen_save.cpp (setup, p2m and
// m2p, suspend and resume, hand-over, cleanup), xen_save_pages.cpp (the
// dirty log and reading pages), xen_save_free.cpp (holes and the guest
// agent's free pages), xen_save_state.cpp (the platform state records).
// Not an API: xen_domain.hpp's attach_save is; only those files include this.
#pragma once

#include "stream/domain/xen/bytes.hpp"
#include "stream/domain/xen/guest_hints.hpp"
#include "stream/domain/xen/guest_checks.hpp"
#include "stream/domain/xen/hvm_records.hpp"
#include "stream/domain/xen/pv_records.hpp"
#include "stream/domain/xen/pv_save_page.hpp"
#include "stream/domain/xen/xen_handles.hpp"
#include "stream/domain/xen/xen_suspend.hpp"

#include "evtchn-ipc/xen_channel.hpp"
#include "stream/clock.hpp"
#include "stream/wire.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>

namespace fastmig::xen {

// Xen's limit on one XEN_DOMCTL_getpageframeinfo3 (xc_get_pfn_type_batch).
constexpr std::size_t kTypeBatch = 1024;
constexpr std::size_t kFpp = kPageSize / 8; // p2m entries per frame

class XenSaveDomain final : public XenSourceDomain, private FrameTranslation {
public:
    XenSaveDomain(std::uint32_t domid, SaveOptions opt)
        : domid_(domid), who_("xen:" + std::to_string(domid)), opt_(std::move(opt)),
          log_(default_log(opt_.log, who_)), h_(who_)
    {
        in_phase(who_, Phase::setup, [&] { setup(); });
    }

    ~XenSaveDomain() override { cleanup(); }

    std::string name() const override { return who_; }
    std::uint64_t nr_pages() const override { return max_pfn_ + 1; }
    std::uint32_t kind() const override { return hvm() ? kDomainKindXenHvm : kDomainKindXenPv; }
    GuestType guest_type() const override { return type_; }

    void enable_dirty_log() override;
    void disable_dirty_log() override;
    std::uint64_t fetch_and_clear_dirty(DirtyBitmap& out) override;

    // HVM/PVH: the gfns with no page (a 512 MiB guest has about a million
    // gfns, most of them the MMIO hole) are "free": round 0 sends them as
    // FREE runs instead of reading 3.5 GiB of nothing, and the destination
    // leaves them unpopulated (hole map).  One type query per 1024 gfns,
    // before round 0 (live) or while suspended (not live).  A hole the
    // guest fills and writes later is dirty and goes with its data.
    //
    // The scan sends nothing, and a destination gives up on a source that is
    // silent for its --timeout-ms (30 s by default): under TCG and load the
    // whole scan of a 512 MiB PVH guest took 49 s and the receiving helper
    // gave up (nested run pvh-fastmig-stock).  So the scan stops after
    // kHoleScanBudget; the gfns it did not reach are typed per batch by
    // read_pages in round 0 (a hole there is read as zeros and named in the
    // hole map all the same).  It runs from the top down: the MMIO hole lies
    // above the RAM, so the budget goes where the holes are.
    static constexpr std::chrono::seconds kHoleScanBudget{5};

    std::uint64_t free_page_hints(DirtyBitmap& out) override;
    void scan_holes(DirtyBitmap& out);
    void agent_hints(DirtyBitmap& out);
    std::uint64_t keep_ram_pv(DirtyBitmap& hinted) const;
    std::uint64_t keep_ram_hvm(DirtyBitmap& hinted);
    void read_pages(std::span<const Pfn> pfns, std::span<std::uint8_t> dst) override;
    void suspend(std::chrono::milliseconds timeout) override;
    void resume() override;
    bool running() const override;

    // The page types as each page was last read: the destination localises
    // those page tables while this side suspends the guest.  A type changes
    // only with a write or a type-count change, and Xen marks both dirty, so
    // a page whose type is not final here is sent again with its new type.
    // The CPU policy comes first, every time (about 1 KiB): the destination
    // sets it outside the downtime, and refuses a guest it cannot run
    // before the last round rather than after it.
    bool offers_early_state() const override { return true; }
    std::vector<StateBlob> early_state() override;
    std::vector<StateBlob> save_state() override;

    DomainClock clock() const override { return DomainClock{paused_at_, 0}; }

    // Deferred cleanup, once the destination owns the guest: outside the
    // downtime (libxc does it before reporting completion).
    void release() override { cleanup(); }

    void handed_over() override;

private:
    // ---- FrameTranslation over Xen's m2p and the guest's live p2m.
    Pfn max_pfn() const override { return max_pfn_; }
    Mfn p2m(Pfn pfn) const override;
    // xc_maximum_ram_page() gives the number of machine frames: the m2p has
    // entries 0 .. max_mfn_ - 1.
    Pfn m2p(Mfn mfn) const override { return mfn >= max_mfn_ ? kInvalidFrame : Pfn(m2p_[mfn]); }

    bool hvm() const { return type_ != GuestType::pv; }

    void setup();
    GuestFacts gather_facts(const xc_domaininfo_t& info);
    void setup_pv(const xc_domaininfo_t& info);
    void setup_hvm(const xc_domaininfo_t& info);
    void open_suspend_channel();
    std::vector<StateBlob> page_map_blobs() const;
    void read_cpu_policy();
    std::vector<StateBlob> policy_blobs() const;
    void map_p2m();
    void clean_into(DirtyBitmap& out);
    void read_batch(std::span<const Pfn> pfns, std::span<std::uint8_t> dst);
    void read_batch_hvm(std::span<const Pfn> pfns, std::span<std::uint8_t> dst);
    void page_types(std::vector<xen_pfn_t>& arr);
    std::vector<StateBlob> state();
    std::vector<StateBlob> state_hvm();
    TscInfo read_tsc();
    void vcpu_state(std::uint32_t id, std::vector<StateBlob>& out);
    void buffer_state(std::uint32_t id, std::uint32_t cmd, std::uint32_t type, std::vector<StateBlob>& out);
    void cleanup() noexcept;

    const std::uint32_t domid_;
    const std::string who_;
    SaveOptions opt_;
    LogFn log_;
    XcHandle h_;
    std::uint32_t max_vcpu_id_ = 0;
    Mfn max_mfn_ = 0;
    xen_pfn_t* m2p_ = nullptr;
    std::size_t m2p_bytes_ = 0;
    ForeignMap shinfo_;
    ForeignMap p2m_map_;
    std::vector<Mfn> p2m_frames_;
    std::vector<Pfn> p2m_frame_pfns_;
    Pfn max_pfn_ = 0;
    GuestType type_ = GuestType::pv;
    PfnTypeMap types_; // PV
    HoleMap holes_;    // HVM, PVH
    std::vector<std::uint8_t> cpuid_policy_; // xen_cpuid_leaf_t[], read at setup
    std::vector<std::uint8_t> msr_policy_;   // xen_msr_entry_t[]
    std::unique_ptr<DeferredPages> deferred_;
    std::unique_ptr<SuspendChannel> suspend_;
    std::unique_ptr<HypercallBuffer> bitmap_;
    std::atomic<bool> logdirty_{false};
    std::atomic<bool> paused_{false};
    std::uint64_t paused_at_ = 0;
    std::mutex cleanup_m_;
};

} // namespace fastmig::xen
