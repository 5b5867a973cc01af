// The destination's domain, attach_restore's (xen_domain.hpp): an empty,
// paused domain (created by the toolstack) built from the stream, as
// xc_domain_restore does: 64-bit PV, or HVM-class (HVM and PVH: memory by
// gfn, then hvm_state.hpp's plan).  Its members are defined in
// xen_restore.cpp (during the stream: pages, early state) and
// xen_restore_end.cpp (at its end: the platform state, in the downtime).
// Internal to the backend.
#pragma once

#include "stream/domain/xen/hvm_zero_pages.hpp"
#include "stream/domain/xen/pv_early_tables.hpp"
#include "stream/domain/xen/pv_frames.hpp"
#include "stream/domain/xen/pv_page_types.hpp"
#include "stream/domain/xen/pv_records.hpp"
#include "stream/domain/xen/xen_handles.hpp"
#include "stream/domain/xen/zero_page_clearer.hpp"

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace fastmig::xen {

class XenRestoreDomain final : public XenIncomingDomain, private FrameTranslation {
public:
    XenRestoreDomain(const RestoreParams& p, std::uint64_t nr_pages, bool hvm);

    std::string name() const override { return who_; }
    std::uint64_t nr_pages() const override { return p2m_.size(); }

    // During the stream (xen_restore.cpp).
    void write_pages(std::span<const Pfn> pfns, std::span<const std::uint8_t> src) override;
    void write_pages_gather(std::span<const Pfn> pfns, std::span<const std::uint8_t* const> srcs) override;
    void zero_pages(std::span<const Pfn> pfns) override { clear_pages(pfns, Phase::receive); }
    void zero_fresh_pages(std::span<const Pfn> pfns) override;
    void read_page(Pfn pfn, std::span<std::uint8_t> dst) override { read_pages(std::span<const Pfn>(&pfn, 1), dst); }
    void read_pages(std::span<const Pfn> pfns, std::span<std::uint8_t> dst) override;
    void early_state(const StateBlob& blob) override;
    void unpause() override;
    DomainClock clock() const override { return DomainClock{0, resumed_at_}; }
    void destroy() override;
    RestoreResult result() const override;

    // At its end (xen_restore_end.cpp).
    void restore_state(const std::vector<StateBlob>& state) override;

private:
    static constexpr std::size_t kBatch = 1024; // frames per populate / map call
    static constexpr std::size_t kPinBatch = 512;
    // In the p2m while a populate call for the pfn is being built; never left
    // there (replaced by the frame, or by kInvalidFrame when it fails).
    static constexpr Mfn kPendingFrame = kInvalidFrame - 1;

    // ---- FrameTranslation over the p2m this restore builds.
    Pfn max_pfn() const override { return p2m_.size() - 1; }
    Mfn p2m(Pfn pfn) const override;
    void set_frame(Pfn pfn, Mfn mfn) { std::atomic_ref<Mfn>(p2m_[pfn]).store(mfn, std::memory_order_release); }
    Pfn m2p(Mfn) const override { throw Error("internal: no m2p lookup at the destination"); }

    // xen_restore.cpp: the frames, and what both ends use.
    void setup(std::uint64_t nr_pages);
    void check_pfn(Pfn pfn, Phase ph) const;
    void ensure_populated(std::span<const Pfn> pfns, Phase ph);
    void clear_pages(std::span<const Pfn> pfns, Phase ph);
    ForeignMap map_pfns(std::span<const Pfn> pfns, int prot, Phase ph);
    void unpend(std::span<const Pfn> pfns);
    void populate_zeroed(std::span<const Pfn> pfns, Phase ph);
    bool set_cpu_policy(const std::vector<std::uint8_t>& cpuid, const std::vector<std::uint8_t>& msr, Phase ph);
    void localise(const std::vector<Pfn>& tables, const PfnTypeMap& types, Phase ph, EarlyTables* keep);

    // xen_restore_end.cpp: the platform state.
    void restore_hvm(const std::vector<StateBlob>& state);
    void set_param(std::uint32_t index, std::uint64_t value);
    void restore(const std::vector<StateBlob>& state);
    void drain_clearer();
    void set_vcpu(std::uint32_t id, std::vector<std::uint8_t>& basic,
                  const std::map<std::uint32_t, std::vector<std::uint8_t>>& extra, const PfnTypeMap& types);
    void pin_pagetables(const PfnTypeMap& types);
    void write_guest_p2m(const P2mFrames& f, const PfnTypeMap& types);

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

} // namespace fastmig::xen
