// The source side (xen_save_domain.hpp): setting up (the guest's type, the
// m2p and its live p2m, the suspend channel), suspend and resume, the
// hand-over and the cleanup.
#include "stream/domain/xen/xen_save_domain.hpp"

namespace fastmig::xen {

void XenSaveDomain::suspend(std::chrono::milliseconds timeout)
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

void XenSaveDomain::resume()
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

bool XenSaveDomain::running() const
{
    try {
        auto info = domain_info(h_.xch, domid_, who_, Phase::setup);
        return !(info.flags & (XEN_DOMINF_shutdown | XEN_DOMINF_paused | XEN_DOMINF_dying));
    } catch (const Error&) {
        return false;
    }
}

// What must not happen late (a new migration of this domain may start as
// soon as libxl has it): log-dirty off, suspend subscription dropped.
// Two hypercalls, inside the downtime as in libxc; the unmapping waits.
void XenSaveDomain::handed_over()
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

Mfn XenSaveDomain::p2m(Pfn pfn) const
{
    if (pfn > max_pfn_)
        return kInvalidFrame;
    std::uint64_t v;
    std::memcpy(&v, p2m_map_.page(pfn / kFpp) + (pfn % kFpp) * 8, 8);
    return v;
}

void XenSaveDomain::setup()
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
GuestFacts XenSaveDomain::gather_facts(const xc_domaininfo_t& info)
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

void XenSaveDomain::setup_pv(const xc_domaininfo_t& info)
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
void XenSaveDomain::setup_hvm(const xc_domaininfo_t& info)
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
void XenSaveDomain::open_suspend_channel()
{
    if (type_ == GuestType::hvm && opt_.suspend_request_hvm && !opt_.suspend_request)
        opt_.suspend_request = opt_.suspend_request_hvm;
    suspend_ = std::make_unique<SuspendChannel>(h_.xch, domid_, who_, log_, opt_.poll_interval,
                                                !opt_.suspend_request);
}

// The guest's p2m through its three-level frame list (shared_info's
// pfn_to_mfn_frame_list_list -> mid frames -> p2m frames), mapped
// read-only for the whole migration.
void XenSaveDomain::map_p2m()
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

void XenSaveDomain::cleanup() noexcept
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

std::unique_ptr<XenSourceDomain> attach_save(std::uint32_t domid, SaveOptions opt)
{
    return std::make_unique<XenSaveDomain>(domid, std::move(opt));
}

} // namespace fastmig::xen
