// The source side (xen_save_domain.hpp): the platform state records, early
// (CPU policy, page types) and suspended (vCPUs, HVM context, params, TSC).
#include "stream/domain/xen/xen_save_domain.hpp"

namespace fastmig::xen {

std::vector<StateBlob> XenSaveDomain::early_state()
{
    return in_phase(who_, Phase::precopy, [&] {
        std::vector<StateBlob> out = policy_blobs();
        for (auto& b : page_map_blobs())
            out.push_back(std::move(b));
        return out;
    });
}

std::vector<StateBlob> XenSaveDomain::save_state()
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

std::vector<StateBlob> XenSaveDomain::page_map_blobs() const
{
    if (hvm())
        return holes_.encode((wire::kMaxStateBlob - kHoleBlobHeader) / kHoleRunSize);
    return types_.encode((wire::kMaxStateBlob - 8) / 8);
}

// The CPU policy the guest runs with, as libxc's save sends it.  Xen
// fixes a domain's policy once it has run, so reading it here, outside
// the downtime, is exact.
void XenSaveDomain::read_cpu_policy()
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

std::vector<StateBlob> XenSaveDomain::policy_blobs() const
{
    std::vector<StateBlob> out;
    if (!cpuid_policy_.empty())
        out.push_back(encode_cpu_policy(rec::kX86CpuidPolicy, cpuid_policy_));
    if (!msr_policy_.empty())
        out.push_back(encode_cpu_policy(rec::kX86MsrPolicy, msr_policy_));
    return out;
}

std::vector<StateBlob> XenSaveDomain::state()
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
std::vector<StateBlob> XenSaveDomain::state_hvm()
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

TscInfo XenSaveDomain::read_tsc()
{
    TscInfo tsc;
    if (xc_domain_get_tsc_info(h_.xch, domid_, &tsc.mode, &tsc.nsec, &tsc.khz, &tsc.incarnation) < 0)
        fail_errno(who_, Phase::state, "cannot read the TSC info");
    return tsc;
}

void XenSaveDomain::vcpu_state(std::uint32_t id, std::vector<StateBlob>& out)
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
void XenSaveDomain::buffer_state(std::uint32_t id, std::uint32_t cmd, std::uint32_t type, std::vector<StateBlob>& out)
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

} // namespace fastmig::xen
