// The source side: a running domain read for the engine, 64-bit PV or
// HVM-class (HVM and PVH: memory by gfn, state as HVM context and params).
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

namespace {

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

    void enable_dirty_log() override
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

    void disable_dirty_log() override
    {
        if (logdirty_ && xc_shadow_control(h_.xch, domid_, XEN_DOMCTL_SHADOW_OP_OFF, nullptr, 0) < 0)
            fail_errno(who_, Phase::finish, "cannot switch log-dirty mode off");
        logdirty_ = false;
    }

    std::uint64_t fetch_and_clear_dirty(DirtyBitmap& out) override
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

    std::uint64_t free_page_hints(DirtyBitmap& out) override
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

    void scan_holes(DirtyBitmap& out)
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
    void agent_hints(DirtyBitmap& out)
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
    std::uint64_t keep_ram_pv(DirtyBitmap& hinted) const
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
    std::uint64_t keep_ram_hvm(DirtyBitmap& hinted)
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

    void read_pages(std::span<const Pfn> pfns, std::span<std::uint8_t> dst) override
    {
        Phase ph = paused_ ? Phase::stop_copy : Phase::precopy;
        if (dst.size() != pfns.size() * kPageSize)
            throw Error(who_, ph, "read buffer does not match the page count");
        for (std::size_t off = 0; off < pfns.size(); off += kTypeBatch) {
            std::size_t n = std::min(kTypeBatch, pfns.size() - off);
            in_phase(who_, ph, [&] { read_batch(pfns.subspan(off, n), dst.subspan(off * kPageSize, n * kPageSize)); });
        }
    }

    void suspend(std::chrono::milliseconds timeout) override
    {
        if (paused_)
            return;
        const std::uint64_t asked = monotonic_ns();
        if (opt_.suspend_request) {
            if (!opt_.suspend_request())
                throw Error(who_, Phase::stop_copy, "the toolstack's suspend callback reported failure");
            // libxl said it is done: check with Xen, briefly.
            paused_at_ = suspend_->wait_suspended(std::min(timeout, std::chrono::milliseconds(1000)));
        } else {
            paused_at_ = suspend_->suspend(timeout);
        }
        paused_ = true;
        char ms[32];
        std::snprintf(ms, sizeof ms, "%.2f ms", double(paused_at_ - asked) / 1e6);
        log_(std::string("suspended in ") + ms + " from the request (" + suspend_->mode() + ")");
    }

    void resume() override
    {
        if (!paused_)
            return;
        // fast = 1: cooperative resume, the guest's suspend hypercall
        // returns "cancelled" and it carries on with its devices as they
        // were (what libxl does when a migration fails).
        if (xc_domain_resume(h_.xch, domid_, 1) < 0)
            fail_errno(who_, Phase::resume, "cooperative resume (xc_domain_resume fast) failed");
        paused_ = false;
        log_("resumed at the source");
    }

    bool running() const override
    {
        try {
            auto info = domain_info(h_.xch, domid_, who_, Phase::setup);
            return !(info.flags & (XEN_DOMINF_shutdown | XEN_DOMINF_paused | XEN_DOMINF_dying));
        } catch (const Error&) {
            return false;
        }
    }

    // The page types as each page was last read: the destination localises
    // those page tables while this side suspends the guest.  A type changes
    // only with a write or a type-count change, and Xen marks both dirty, so
    // a page whose type is not final here is sent again with its new type.
    // The CPU policy comes first, every time (about 1 KiB): the destination
    // sets it outside the downtime, and refuses a guest it cannot run
    // before the last round rather than after it.
    bool offers_early_state() const override { return true; }
    std::vector<StateBlob> early_state() override
    {
        return in_phase(who_, Phase::precopy, [&] {
            std::vector<StateBlob> out = policy_blobs();
            for (auto& b : page_map_blobs())
                out.push_back(std::move(b));
            return out;
        });
    }

    std::vector<StateBlob> save_state() override
    {
        if (!paused_)
            throw Error(who_, Phase::state, "platform state read while the guest runs");
        const std::uint64_t t0 = monotonic_ns();
        auto out = in_phase(who_, Phase::state, [&] { return state(); });
        std::size_t bytes = 0;
        for (const auto& b : out)
            bytes += b.data.size();
        char line[96];
        std::snprintf(line, sizeof line, "platform state: %zu records, %zu bytes, read in %.1f ms", out.size(), bytes,
                      double(monotonic_ns() - t0) / 1e6);
        log_(line);
        return out;
    }

    DomainClock clock() const override { return DomainClock{paused_at_, 0}; }

    // Deferred cleanup, once the destination owns the guest: outside the
    // downtime (libxc does it before reporting completion).
    void release() override { cleanup(); }

    // What must not happen late (a new migration of this domain may start as
    // soon as libxl has it): log-dirty off, suspend subscription dropped.
    // Two hypercalls, inside the downtime as in libxc; the unmapping waits.
    void handed_over() override
    {
        const std::uint64_t t0 = monotonic_ns();
        {
            std::lock_guard<std::mutex> g(cleanup_m_);
            if (suspend_)
                suspend_->close();
        }
        disable_dirty_log();
        char ms[32];
        std::snprintf(ms, sizeof ms, "%.1f ms", double(monotonic_ns() - t0) / 1e6);
        log_(std::string("handed over: log-dirty off, suspend subscription dropped in ") + ms);
    }

private:
    // ---- FrameTranslation over Xen's m2p and the guest's live p2m.
    Pfn max_pfn() const override { return max_pfn_; }
    Mfn p2m(Pfn pfn) const override
    {
        if (pfn > max_pfn_)
            return kInvalidFrame;
        std::uint64_t v;
        std::memcpy(&v, p2m_map_.page(pfn / kFpp) + (pfn % kFpp) * 8, 8);
        return v;
    }
    // xc_maximum_ram_page() gives the number of machine frames: the m2p has
    // entries 0 .. max_mfn_ - 1.
    Pfn m2p(Mfn mfn) const override { return mfn >= max_mfn_ ? kInvalidFrame : Pfn(m2p_[mfn]); }

    bool hvm() const { return type_ != GuestType::pv; }

    void setup()
    {
        auto info = domain_info(h_.xch, domid_, who_, Phase::setup);
        if (info.flags & (XEN_DOMINF_dying | XEN_DOMINF_shutdown))
            throw Error("the domain is " + describe_state(info) + ", not migratable");
        type_ = classify_guest(info.flags & XEN_DOMINF_hvm_guest, info.arch_config.emulation_flags);
        max_vcpu_id_ = info.max_vcpu_id;
        // Everything that refuses the guest comes before anything that
        // changes it (the suspend channel allocates a port in its table).
        read_cpu_policy();
        if (auto why = refusal(gather_facts(info)))
            throw Error("refused, the guest keeps running: " + *why);
        if (hvm())
            setup_hvm(info);
        else
            setup_pv(info);
        bitmap_ = std::make_unique<HypercallBuffer>(h_.xch, ((max_pfn_ + 1 + 63) / 64) * 8, who_, Phase::setup,
                                                    "the dirty bitmap");
    }

    // What guest_checks.hpp decides on: Xen's domain info, the CPU policy,
    // HVM params, and the xenstore nodes libxl (and XenServer's toolstack)
    // keep for the domain.
    GuestFacts gather_facts(const xc_domaininfo_t& info)
    {
        GuestFacts f;
        f.type = type_;
        if (!hvm()) {
            unsigned width = 0;
            if (xc_domain_get_guest_width(h_.xch, domid_, &width) < 0)
                fail_errno(who_, Phase::setup, "cannot read the guest's width");
            f.pv_width_bytes = width;
        }
        f.cpuid_offers_nested_virt = cpu_policy_offers_nested_virt(cpuid_policy_);
        f.paged_pages = info.paged_pages;
        f.shared_pages = info.shr_pages;
        if (hvm()) {
            // Deprecated in 4.17 (nested virt is a creation flag now, seen
            // through the CPU policy): Xen may refuse to answer; a refusal
            // is not a fact.
            std::uint64_t v = 0;
            if (xc_hvm_param_get(h_.xch, domid_, hvm_param::kNestedHvm, &v) == 0)
                f.nestedhvm_param = v;
            std::uint64_t tot = 0, cache = 0, entries = 0;
            if (xc_domain_get_pod_target(h_.xch, domid_, &tot, &cache, &entries) == 0)
                f.pod_entries = entries;
            else
                log_(std::string("populate-on-demand state unknown (") + std::strerror(errno) + "): not checked");
        }
        XsHandle xs;
        const std::string dom = "/local/domain/" + std::to_string(domid_);
        f.xs_nomigrate = xs.read(dom + "/platform/nomigrate");
        f.xs_nested_virt = xs.read(dom + "/platform/nested-virt");
        // libxl keeps the assigned devices of PV and HVM guests alike in a
        // pci backend (libxl_pci.c), device 0, with their count.
        for (const std::string& p : {"/local/domain/0/backend/pci/" + std::to_string(domid_) + "/0/num_devs",
                                     "/libxl/" + std::to_string(domid_) + "/device/pci/0/num_devs"})
            if (f.pci_path.empty() && xs_flag_set(xs.read(p)))
                f.pci_path = p + " = " + xs.read(p);
        if (!xs)
            log_("xenstore unavailable: platform/nomigrate, nested-virt and PCI passthrough not checked");
        return f;
    }

    void setup_pv(const xc_domaininfo_t& info)
    {
        unsigned long max_mfn = 0;
        if (xc_maximum_ram_page(h_.xch, &max_mfn) < 0)
            fail_errno(who_, Phase::setup, "cannot read the machine's highest frame");
        max_mfn_ = max_mfn;
        unsigned long mfn0 = 0;
        m2p_ = xc_map_m2p(h_.xch, max_mfn, PROT_READ, &mfn0);
        if (!m2p_)
            fail_errno(who_, Phase::setup, "cannot map Xen's m2p table");
        // xc_map_m2p maps whole 2 MiB chunks.
        m2p_bytes_ = ((max_mfn * sizeof(xen_pfn_t) + (1ul << 21) - 1) >> 21) << 21;

        shinfo_ = map_frames(h_.fmem, domid_, PROT_READ, {xen_pfn_t(info.shared_info_frame)}, who_, Phase::setup,
                             "the shared info page");
        map_p2m();
        types_ = PfnTypeMap(max_pfn_ + 1);
        deferred_ = std::make_unique<DeferredPages>(max_pfn_ + 1);
        open_suspend_channel();
        log_("attached: 64-bit PV, " + std::to_string(max_pfn_ + 1) + " pfns, " +
             std::to_string(p2m_frames_.size()) + " p2m frames, " + std::to_string(max_vcpu_id_ + 1) + " vCPUs");
    }

    // HVM and PVH: gfns 0 .. nr_gpfns - 1, read as they are (no p2m, no
    // page tables to rewrite); holes are found per batch from the types.
    void setup_hvm(const xc_domaininfo_t& info)
    {
        xen_pfn_t nr = 0;
        if (xc_domain_nr_gpfns(h_.xch, domid_, &nr) < 0)
            fail_errno(who_, Phase::setup, "cannot read the guest's physical address space size (nr_gpfns)");
        if (nr == 0 || nr > (xen_pfn_t{1} << 32))
            throw Error("the guest's physical address space of " + std::to_string(nr) + " pages is not migratable");
        max_pfn_ = nr - 1;
        holes_ = HoleMap(nr);
        deferred_ = std::make_unique<DeferredPages>(nr);
        open_suspend_channel();
        log_(std::string("attached: ") + guest_type_name(type_) + " (" +
             (info.flags & XEN_DOMINF_hap ? "HAP" : "shadow paging") + "), " + std::to_string(nr) + " gfns, " +
             std::to_string(info.tot_pages) + " pages populated, " + std::to_string(max_vcpu_id_ + 1) + " vCPUs");
    }

    // With libxl's callback, libxl requests the suspension and waits for it
    // through VIRQ_DOM_EXC: subscribing would take that from it.  An HVM
    // guest with a device model is always suspended through the toolstack,
    // which saves the device model's state in that step.
    void open_suspend_channel()
    {
        if (type_ == GuestType::hvm && opt_.suspend_request_hvm && !opt_.suspend_request)
            opt_.suspend_request = opt_.suspend_request_hvm;
        suspend_ = std::make_unique<SuspendChannel>(h_.xch, domid_, who_, log_, opt_.poll_interval,
                                                    !opt_.suspend_request);
    }

    std::vector<StateBlob> page_map_blobs() const
    {
        if (hvm())
            return holes_.encode((wire::kMaxStateBlob - kHoleBlobHeader) / kHoleRunSize);
        return types_.encode((wire::kMaxStateBlob - 8) / 8);
    }

    // The CPU policy the guest runs with, as libxc's save sends it.  Xen
    // fixes a domain's policy once it has run, so reading it here, outside
    // the downtime, is exact.
    void read_cpu_policy()
    {
        std::unique_ptr<xc_cpu_policy_t, decltype(&xc_cpu_policy_destroy)> pol(xc_cpu_policy_init(),
                                                                               xc_cpu_policy_destroy);
        if (!pol)
            throw Error("cannot allocate a CPU policy object");
        std::uint32_t nr_leaves = 0, nr_msrs = 0;
        if (xc_cpu_policy_get_size(h_.xch, &nr_leaves, &nr_msrs) < 0)
            fail_errno(who_, Phase::setup, "cannot size the CPU policy");
        if (nr_leaves > cpu_policy::kMaxLeaves || nr_msrs > cpu_policy::kMaxMsrs)
            throw Error("Xen's CPU policy has " + std::to_string(nr_leaves) + " leaves and " +
                        std::to_string(nr_msrs) + " MSRs, more than a stream carries");
        std::vector<xen_cpuid_leaf_t> leaves(nr_leaves);
        std::vector<xen_msr_entry_t> msrs(nr_msrs);
        if (xc_cpu_policy_get_domain(h_.xch, domid_, pol.get()) < 0)
            fail_errno(who_, Phase::setup, "cannot read the domain's CPU policy");
        if (xc_cpu_policy_serialise(h_.xch, pol.get(), leaves.data(), &nr_leaves, msrs.data(), &nr_msrs) < 0)
            fail_errno(who_, Phase::setup, "cannot serialise the domain's CPU policy");
        auto bytes = [](const auto* p, std::size_t n) {
            auto* b = reinterpret_cast<const std::uint8_t*>(p);
            return std::vector<std::uint8_t>(b, b + n * sizeof *p);
        };
        cpuid_policy_ = bytes(leaves.data(), std::min<std::size_t>(nr_leaves, leaves.size()));
        msr_policy_ = bytes(msrs.data(), std::min<std::size_t>(nr_msrs, msrs.size()));
    }

    std::vector<StateBlob> policy_blobs() const
    {
        std::vector<StateBlob> out;
        if (!cpuid_policy_.empty())
            out.push_back(encode_cpu_policy(rec::kX86CpuidPolicy, cpuid_policy_));
        if (!msr_policy_.empty())
            out.push_back(encode_cpu_policy(rec::kX86MsrPolicy, msr_policy_));
        return out;
    }

    // The guest's p2m through its three-level frame list (shared_info's
    // pfn_to_mfn_frame_list_list -> mid frames -> p2m frames), mapped
    // read-only for the whole migration.
    void map_p2m()
    {
        auto root = p2m_root(std::span<const std::uint8_t>(shinfo_.page(0), kPageSize));
        if (root.frame_list_list == 0 || root.frame_list_list == kInvalidFrame || root.frame_list_list > max_mfn_)
            throw Error(root.p2m_cr3 ? "the guest offers only a linear p2m list (p2m_cr3); reading it is not "
                                       "implemented (the frame list list is " + hex(root.frame_list_list) + ")"
                                     : "the guest offers no p2m frame list list (" + hex(root.frame_list_list) +
                                           ")");
        max_pfn_ = root.max_pfn;
        std::uint64_t fll_entries = max_pfn_ / (kFpp * kFpp) + 1;
        if (fll_entries > kFpp)
            throw Error("p2m of " + std::to_string(max_pfn_ + 1) + " entries is too large for a frame list list");
        auto fll = map_frames(h_.fmem, domid_, PROT_READ, {xen_pfn_t(root.frame_list_list)}, who_, Phase::setup,
                              "the p2m frame list list");
        std::vector<xen_pfn_t> mids(fll_entries);
        std::memcpy(mids.data(), fll.page(0), fll_entries * 8);
        // Trailing entries all equal name the same mid frame full of
        // invalid entries: the p2m really ends before them.
        std::uint64_t last = 0;
        for (std::uint64_t i = 0; i < fll_entries; ++i) {
            if (mids[i] == 0 || mids[i] > max_mfn_)
                throw Error("p2m frame list list entry " + std::to_string(i) + " is " + hex(mids[i]));
            if (i == 0 || mids[i] != mids[i - 1])
                last = i;
        }
        Pfn trimmed = (last + 1) * kFpp * kFpp - 1;
        if (trimmed < max_pfn_) {
            max_pfn_ = trimmed;
            fll_entries = last + 1;
            mids.resize(fll_entries);
        }
        auto mid = map_frames(h_.fmem, domid_, PROT_READ, mids, who_, Phase::setup, "the p2m frame lists");
        std::uint64_t leaves = p2m_frame_count(max_pfn_);
        std::vector<xen_pfn_t> leaf(leaves);
        for (std::uint64_t i = 0; i < leaves; ++i) {
            std::memcpy(&leaf[i], mid.page(i / kFpp) + (i % kFpp) * 8, 8);
            if (leaf[i] == 0 || leaf[i] > max_mfn_)
                throw Error("p2m frame list entry " + std::to_string(i) + " is " + hex(leaf[i]));
        }
        p2m_map_ = map_frames(h_.fmem, domid_, PROT_READ, leaf, who_, Phase::setup, "the p2m");
        p2m_frames_.assign(leaf.begin(), leaf.end());
        // Checked now so that a broken p2m fails before any page is sent.
        p2m_frame_pfns_ = p2m_frame_pfns(p2m_frames_, *this);
    }

    void clean_into(DirtyBitmap& out)
    {
        xc_shadow_op_stats_t stats{};
        if (xc_logdirty_control(h_.xch, domid_, XEN_DOMCTL_SHADOW_OP_CLEAN, bitmap_->raw(), max_pfn_ + 1, 0, &stats) < 0)
            fail_errno(who_, paused_ ? Phase::stop_copy : Phase::precopy, "cannot fetch the dirty log");
        std::memcpy(out.words(), bitmap_->get(), out.nr_words() * 8);
        // Bits past the last pfn must stay clear (DirtyBitmap's invariant).
        if ((max_pfn_ + 1) % 64)
            out.words()[out.nr_words() - 1] &= (std::uint64_t{1} << ((max_pfn_ + 1) % 64)) - 1;
    }

    void read_batch(std::span<const Pfn> pfns, std::span<std::uint8_t> dst)
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
    void read_batch_hvm(std::span<const Pfn> pfns, std::span<std::uint8_t> dst)
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
    void page_types(std::vector<xen_pfn_t>& arr)
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

    std::vector<StateBlob> state()
    {
        if (hvm())
            return state_hvm();
        std::vector<StateBlob> out;
        out.push_back(encode_pv_info(8, 4));
        P2mFrames f;
        f.start_pfn = 0;
        f.end_pfn = std::uint32_t(max_pfn_);
        if (max_pfn_ > 0xffffffffull)
            throw Error("p2m beyond 2^32 entries cannot be described by X86_PV_P2M_FRAMES");
        f.frame_pfns = p2m_frame_pfns(p2m_frames_, *this); // again: the guest may have moved them
        out.push_back(encode_p2m_frames(f));
        out.push_back(encode_tsc_info(read_tsc()));
        for (auto& b : policy_blobs())
            out.push_back(std::move(b));
        StateBlob sh;
        sh.type = rec::kSharedInfo;
        sh.data.assign(shinfo_.page(0), shinfo_.page(0) + kPageSize);
        out.push_back(std::move(sh));
        for (std::uint32_t id = 0; id <= max_vcpu_id_; ++id)
            vcpu_state(id, out);
        for (auto& b : types_.encode((wire::kMaxStateBlob - 8) / 8))
            out.push_back(std::move(b));
        return out;
    }

    // libxc's HVM end of checkpoint (TSC, HVM_CONTEXT, HVM_PARAMS), with the
    // CPU policy and the hole map: no vCPU records, the context holds them.
    std::vector<StateBlob> state_hvm()
    {
        std::vector<StateBlob> out;
        out.push_back(encode_tsc_info(read_tsc()));
        for (auto& b : policy_blobs())
            out.push_back(std::move(b));
        const int size = xc_domain_hvm_getcontext(h_.xch, domid_, nullptr, 0);
        if (size < 0)
            fail_errno(who_, Phase::state, "cannot size the HVM context");
        if (std::size_t(size) > wire::kMaxStateBlob || std::size_t(size) > hvm_ctx::kMaxSize)
            throw Error("HVM context of " + std::to_string(size) + " bytes, larger than a state blob");
        StateBlob ctx;
        ctx.type = rec::kHvmContext;
        ctx.data.resize(std::size_t(size));
        const int got = xc_domain_hvm_getcontext(h_.xch, domid_, ctx.data.data(), std::uint32_t(size));
        if (got < 0)
            fail_errno(who_, Phase::state, "cannot read the HVM context");
        if (got > size)
            throw Error("HVM context grew from " + std::to_string(size) + " to " + std::to_string(got) + " bytes");
        ctx.data.resize(std::size_t(got));
        // The destination checks it too; failing here keeps the guest here.
        check_hvm_context(ctx.data, max_vcpu_id_);
        out.push_back(std::move(ctx));
        std::vector<HvmParam> params;
        for (std::uint32_t index : hvm_param::kSaved) {
            std::uint64_t v = 0;
            if (xc_hvm_param_get(h_.xch, domid_, index, &v) < 0)
                fail_errno(who_, Phase::state, "cannot read " + hvm_param_name(index));
            if (v)
                params.push_back({index, v});
        }
        if (!params.empty())
            out.push_back(encode_hvm_params(params));
        for (auto& b : page_map_blobs())
            out.push_back(std::move(b));
        return out;
    }

    TscInfo read_tsc()
    {
        TscInfo tsc;
        if (xc_domain_get_tsc_info(h_.xch, domid_, &tsc.mode, &tsc.nsec, &tsc.khz, &tsc.incarnation) < 0)
            fail_errno(who_, Phase::state, "cannot read the TSC info");
        return tsc;
    }

    void vcpu_state(std::uint32_t id, std::vector<StateBlob>& out)
    {
        xc_vcpuinfo_t vinfo{};
        if (xc_vcpu_getinfo(h_.xch, domid_, id, &vinfo) < 0)
            fail_errno(who_, Phase::state, "cannot read vcpu" + std::to_string(id) + "'s info");
        if (!vinfo.online)
            return;
        vcpu_guest_context_any_t ctx{};
        if (xc_vcpu_getcontext(h_.xch, domid_, id, &ctx) < 0)
            fail_errno(who_, Phase::state, "cannot read vcpu" + std::to_string(id) + "'s context");
        std::vector<std::uint8_t> basic(reinterpret_cast<std::uint8_t*>(&ctx.x64),
                                        reinterpret_cast<std::uint8_t*>(&ctx.x64) + sizeof ctx.x64);
        normalise_vcpu_basic(basic, id, *this);
        out.push_back(encode_vcpu_blob(rec::kX86PvVcpuBasic, id, basic));

        xen_domctl domctl{};
        domctl.cmd = XEN_DOMCTL_get_ext_vcpucontext;
        domctl.domain = domid_;
        domctl.u.ext_vcpucontext.vcpu = id;
        if (xc_domctl(h_.xch, &domctl) < 0)
            fail_errno(who_, Phase::state, "cannot read vcpu" + std::to_string(id) + "'s extended context");
        if (auto sz = domctl.u.ext_vcpucontext.size) {
            if (sz > sizeof domctl.u.ext_vcpucontext)
                throw Error("vcpu" + std::to_string(id) + "'s extended context of " + std::to_string(sz) + " bytes");
            auto* p = reinterpret_cast<const std::uint8_t*>(&domctl.u.ext_vcpucontext);
            out.push_back(encode_vcpu_blob(rec::kX86PvVcpuExtended, id, {p, sz}));
        }
        buffer_state(id, XEN_DOMCTL_getvcpuextstate, rec::kX86PvVcpuXsave, out);
        buffer_state(id, XEN_DOMCTL_get_vcpu_msrs, rec::kX86PvVcpuMsrs, out);
    }

    // xsave and MSR state: ask the size, then fetch into a hypercall buffer.
    void buffer_state(std::uint32_t id, std::uint32_t cmd, std::uint32_t type, std::vector<StateBlob>& out)
    {
        const std::string what = "vcpu" + std::to_string(id) +
                                 (cmd == XEN_DOMCTL_getvcpuextstate ? "'s xsave state" : "'s MSRs");
        xen_domctl domctl{};
        domctl.cmd = cmd;
        domctl.domain = domid_;
        std::size_t bytes = 0;
        if (cmd == XEN_DOMCTL_getvcpuextstate) {
            domctl.u.vcpuextstate.vcpu = id;
            if (xc_domctl(h_.xch, &domctl) < 0)
                fail_errno(who_, Phase::state, "cannot size " + what);
            if (!domctl.u.vcpuextstate.xfeature_mask)
                return;
            bytes = domctl.u.vcpuextstate.size;
        } else {
            domctl.u.vcpu_msrs.vcpu = id;
            if (xc_domctl(h_.xch, &domctl) < 0)
                fail_errno(who_, Phase::state, "cannot size " + what);
            if (!domctl.u.vcpu_msrs.msr_count)
                return;
            bytes = domctl.u.vcpu_msrs.msr_count * sizeof(xen_domctl_vcpu_msr_t);
        }
        if (bytes == 0 || bytes > wire::kMaxStateBlob - 8)
            throw Error(what + " of " + std::to_string(bytes) + " bytes");
        HypercallBuffer hb(h_.xch, bytes, who_, Phase::state, what);
        if (cmd == XEN_DOMCTL_getvcpuextstate)
            set_xen_guest_handle_raw(domctl.u.vcpuextstate.buffer, hb.get<std::uint64_t>());
        else
            set_xen_guest_handle_raw(domctl.u.vcpu_msrs.msrs, hb.get<xen_domctl_vcpu_msr_t>());
        if (xc_domctl(h_.xch, &domctl) < 0)
            fail_errno(who_, Phase::state, "cannot read " + what);
        std::size_t got = cmd == XEN_DOMCTL_getvcpuextstate
                              ? std::size_t(domctl.u.vcpuextstate.size)
                              : std::size_t(domctl.u.vcpu_msrs.msr_count) * sizeof(xen_domctl_vcpu_msr_t);
        if (got == 0)
            return;
        if (got > bytes)
            throw Error(what + " grew from " + std::to_string(bytes) + " to " + std::to_string(got) + " bytes");
        out.push_back(encode_vcpu_blob(type, id, {hb.get<const std::uint8_t>(), got}));
    }

    void cleanup() noexcept
    {
        std::lock_guard<std::mutex> g(cleanup_m_);
        if (logdirty_) {
            if (xc_shadow_control(h_.xch, domid_, XEN_DOMCTL_SHADOW_OP_OFF, nullptr, 0) < 0)
                log_("cleanup: cannot switch log-dirty off: " + std::string(std::strerror(errno)));
            logdirty_ = false;
        }
        if (suspend_)
            suspend_->close();
        p2m_map_.reset();
        shinfo_.reset();
        if (m2p_) {
            munmap(m2p_, m2p_bytes_);
            m2p_ = nullptr;
        }
        bitmap_.reset();
    }

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

} // namespace

std::unique_ptr<XenSourceDomain> attach_save(std::uint32_t domid, SaveOptions opt)
{
    return std::make_unique<XenSaveDomain>(domid, std::move(opt));
}

} // namespace fastmig::xen
