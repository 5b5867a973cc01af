#include "stream/domain/xen/pv_records.hpp"

#include "stream/domain/xen/bytes.hpp"

#include <algorithm>

namespace fastmig::xen {

namespace {

std::string vcpu_name(std::uint32_t id) { return "vcpu" + std::to_string(id); }

// Source side: mfn -> pfn or Error naming the field.
Pfn to_pfn(const FrameTranslation& t, Mfn mfn, const std::string& what)
{
    auto pfn = guest_pfn_of(t, mfn);
    if (!pfn)
        throw Error(what + " names " + describe_mfn(t, mfn));
    return *pfn;
}

// Destination side: pfn -> mfn with the page type the field requires.
Mfn to_mfn_typed(const FrameTranslation& dest, const PfnTypeMap& types, Pfn pfn, PageType want,
                 const std::string& what)
{
    Mfn mfn = dest_mfn_of(dest, pfn, what); // range and population first
    if (pfn >= types.size())
        throw Error(what + " names pfn " + hex(pfn) + ", beyond the page type map");
    PageType got = types.get(pfn);
    bool ok = want == kPfinfoNotab ? got == kPfinfoNotab : page_type_level(got) == page_type_level(want);
    if (!ok)
        throw Error(what + " names pfn " + hex(pfn) + " of type " + page_type_name(got) + ", expected " +
                    page_type_name(want));
    return mfn;
}

void check_ctx(std::span<const std::uint8_t> ctx)
{
    if (ctx.size() != vcpu_ctx::kSize)
        throw Error("vCPU basic context of " + std::to_string(ctx.size()) + " bytes, expected " +
                    std::to_string(vcpu_ctx::kSize) + " (64-bit PV)");
}

unsigned gdt_frames(std::span<const std::uint8_t> ctx, std::uint32_t vcpu_id)
{
    auto ents = load<std::uint64_t>(ctx, vcpu_ctx::kGdtEnts);
    if (ents > vcpu_ctx::kMaxGdtEntries)
        throw Error(vcpu_name(vcpu_id) + ": GDT of " + std::to_string(ents) + " entries, above Xen's limit of " +
                    std::to_string(vcpu_ctx::kMaxGdtEntries));
    return unsigned((ents + 511) / 512); // 512 descriptors of 8 bytes per frame
}

} // namespace

StateBlob encode_pv_info(unsigned guest_width, unsigned pt_levels)
{
    StateBlob b;
    b.type = rec::kX86PvInfo;
    b.data.assign(8, 0);
    b.data[0] = std::uint8_t(guest_width);
    b.data[1] = std::uint8_t(pt_levels);
    return b;
}

void check_pv_info(std::span<const std::uint8_t> body)
{
    if (body.size() != 8)
        throw StreamError("X86_PV_INFO of " + std::to_string(body.size()) + " bytes, expected 8");
    unsigned width = body[0], levels = body[1];
    if (width == 4 && levels == 3)
        throw StreamError("the stream holds a 32-bit PV guest; this backend restores 64-bit PV guests only");
    if (width != 8 || levels != 4)
        throw StreamError("X86_PV_INFO with guest width " + std::to_string(width) + " and " + std::to_string(levels) +
                    " page-table levels is not a valid combination");
    if (std::any_of(body.begin() + 2, body.end(), [](std::uint8_t c) { return c != 0; }))
        throw StreamError("X86_PV_INFO: reserved bytes not zero");
}

std::uint64_t p2m_frame_count(Pfn max_pfn) { return max_pfn / (kPageSize / 8) + 1; }

StateBlob encode_p2m_frames(const P2mFrames& f)
{
    StateBlob b;
    b.type = rec::kX86PvP2mFrames;
    append<std::uint32_t>(b.data, f.start_pfn);
    append<std::uint32_t>(b.data, f.end_pfn);
    for (auto p : f.frame_pfns)
        append<std::uint64_t>(b.data, p);
    return b;
}

P2mFrames parse_p2m_frames(std::span<const std::uint8_t> body, Pfn max_pfn)
{
    if (body.size() < 8)
        throw StreamError("X86_PV_P2M_FRAMES truncated: " + std::to_string(body.size()) + " bytes");
    P2mFrames f;
    f.start_pfn = load<std::uint32_t>(body, 0);
    f.end_pfn = load<std::uint32_t>(body, 4);
    if (f.start_pfn > f.end_pfn)
        throw StreamError("X86_PV_P2M_FRAMES: start pfn " + hex(f.start_pfn) + " above end pfn " + hex(f.end_pfn));
    if (f.start_pfn != 0 || f.end_pfn != max_pfn)
        throw StreamError("X86_PV_P2M_FRAMES covers pfns " + hex(f.start_pfn) + ".." + hex(f.end_pfn) +
                    ", expected the whole p2m 0.." + hex(max_pfn));
    std::uint64_t n = p2m_frame_count(f.end_pfn);
    if (body.size() != 8 + n * 8)
        throw StreamError("X86_PV_P2M_FRAMES of " + std::to_string(body.size()) + " bytes, expected " +
                    std::to_string(8 + n * 8) + " for " + std::to_string(n) + " frames");
    for (std::uint64_t i = 0; i < n; ++i) {
        Pfn p = load<std::uint64_t>(body, 8 + i * 8);
        if (p > max_pfn)
            throw StreamError("X86_PV_P2M_FRAMES: frame " + std::to_string(i) + " at pfn " + hex(p) +
                        ", beyond the guest's last pfn " + hex(max_pfn));
        f.frame_pfns.push_back(p);
    }
    return f;
}

std::vector<Pfn> p2m_frame_pfns(std::span<const Mfn> frame_mfns, const FrameTranslation& t)
{
    std::vector<Pfn> out;
    out.reserve(frame_mfns.size());
    for (std::size_t i = 0; i < frame_mfns.size(); ++i)
        out.push_back(to_pfn(t, frame_mfns[i], "p2m frame " + std::to_string(i)));
    return out;
}

StateBlob encode_vcpu_blob(std::uint32_t type, std::uint32_t vcpu_id, std::span<const std::uint8_t> context)
{
    StateBlob b;
    b.type = type;
    append<std::uint32_t>(b.data, vcpu_id);
    append<std::uint32_t>(b.data, 0);
    b.data.insert(b.data.end(), context.begin(), context.end());
    return b;
}

VcpuBlob parse_vcpu_blob(std::uint32_t type, std::span<const std::uint8_t> body, std::uint32_t max_vcpu_id)
{
    if (body.size() < 8)
        throw StreamError("vCPU record of type " + std::to_string(type) + " truncated: " + std::to_string(body.size()) +
                    " bytes");
    VcpuBlob v;
    v.vcpu_id = load<std::uint32_t>(body, 0);
    if (v.vcpu_id > max_vcpu_id)
        throw StreamError("vCPU record for " + vcpu_name(v.vcpu_id) + ", but the domain's last vCPU is " +
                    std::to_string(max_vcpu_id));
    v.context = body.subspan(8);
    if (type == rec::kX86PvVcpuBasic && v.context.size() != vcpu_ctx::kSize)
        throw StreamError("X86_PV_VCPU_BASIC for " + vcpu_name(v.vcpu_id) + " of " +
                          std::to_string(v.context.size()) + " bytes, expected " + std::to_string(vcpu_ctx::kSize));
    else if (v.context.empty())
        throw StreamError("empty vCPU record of type " + std::to_string(type) + " for " + vcpu_name(v.vcpu_id));
    return v;
}

void normalise_vcpu_basic(std::span<std::uint8_t> ctx, std::uint32_t vcpu_id, const FrameTranslation& t)
{
    check_ctx(ctx);
    const std::string who = vcpu_name(vcpu_id);
    // A suspended PV guest passes its start_info frame in rdx (vCPU 0).
    if (vcpu_id == 0)
        store<std::uint64_t>(ctx, vcpu_ctx::kRdx,
                             to_pfn(t, load<std::uint64_t>(ctx, vcpu_ctx::kRdx), who + "'s start_info (rdx)"));
    unsigned n = gdt_frames(ctx, vcpu_id);
    for (unsigned i = 0; i < n; ++i) {
        std::size_t off = vcpu_ctx::kGdtFrames + i * 8;
        store<std::uint64_t>(ctx, off,
                             to_pfn(t, load<std::uint64_t>(ctx, off), who + "'s GDT frame " + std::to_string(i)));
    }
    std::size_t cr3 = vcpu_ctx::kCtrlreg + 3 * 8, cr1 = vcpu_ctx::kCtrlreg + 1 * 8;
    Pfn top = to_pfn(t, load<std::uint64_t>(ctx, cr3) >> kPageShift, who + "'s cr3");
    store<std::uint64_t>(ctx, cr3, top << kPageShift);
    // cr1 holds the user-mode top-level table of a 64-bit guest (0: none).
    if (auto v = load<std::uint64_t>(ctx, cr1)) {
        Pfn user = to_pfn(t, v >> kPageShift, who + "'s user page table (cr1)");
        store<std::uint64_t>(ctx, cr1, 1 | (user << kPageShift));
    }
}

Pfn localise_vcpu_basic(std::span<std::uint8_t> ctx, std::uint32_t vcpu_id, const FrameTranslation& dest,
                        const PfnTypeMap& types)
{
    check_ctx(ctx);
    const std::string who = vcpu_name(vcpu_id);
    Pfn start_info = kInvalidFrame;
    if (vcpu_id == 0) {
        start_info = load<std::uint64_t>(ctx, vcpu_ctx::kRdx);
        store<std::uint64_t>(ctx, vcpu_ctx::kRdx,
                             to_mfn_typed(dest, types, start_info, kPfinfoNotab, who + "'s start_info (rdx)"));
    }
    store<std::uint64_t>(ctx, vcpu_ctx::kFlags, load<std::uint64_t>(ctx, vcpu_ctx::kFlags) | vcpu_ctx::kFlagOnline);
    unsigned n = gdt_frames(ctx, vcpu_id);
    for (unsigned i = 0; i < n; ++i) {
        std::size_t off = vcpu_ctx::kGdtFrames + i * 8;
        store<std::uint64_t>(ctx, off, to_mfn_typed(dest, types, load<std::uint64_t>(ctx, off), kPfinfoNotab,
                                                    who + "'s GDT frame " + std::to_string(i)));
    }
    std::size_t cr3 = vcpu_ctx::kCtrlreg + 3 * 8, cr1 = vcpu_ctx::kCtrlreg + 1 * 8;
    Mfn top = to_mfn_typed(dest, types, load<std::uint64_t>(ctx, cr3) >> kPageShift, kPfinfoL4, who + "'s cr3");
    store<std::uint64_t>(ctx, cr3, top << kPageShift);
    auto v = load<std::uint64_t>(ctx, cr1);
    if (v & 1) {
        Mfn user = to_mfn_typed(dest, types, v >> kPageShift, kPfinfoL4, who + "'s user page table (cr1)");
        store<std::uint64_t>(ctx, cr1, user << kPageShift);
    }
    return start_info;
}

StartInfoResult localise_start_info(std::span<std::uint8_t> page, const FrameTranslation& dest,
                                    std::uint32_t store_evtchn, std::uint32_t console_evtchn,
                                    std::uint64_t shared_info_maddr)
{
    if (page.size() != kPageSize)
        throw Error("start_info buffer is not one page");
    StartInfoResult r;
    r.store_mfn = dest_mfn_of(dest, load<std::uint64_t>(page, start_info::kStoreMfn), "start_info's xenstore page");
    r.console_mfn =
        dest_mfn_of(dest, load<std::uint64_t>(page, start_info::kConsoleMfn), "start_info's console page");
    store<std::uint64_t>(page, start_info::kStoreMfn, r.store_mfn);
    store<std::uint32_t>(page, start_info::kStoreEvtchn, store_evtchn);
    store<std::uint64_t>(page, start_info::kConsoleMfn, r.console_mfn);
    store<std::uint32_t>(page, start_info::kConsoleEvtchn, console_evtchn);
    store<std::uint64_t>(page, start_info::kNrPages, dest.max_pfn() + 1);
    store<std::uint64_t>(page, start_info::kSharedInfo, shared_info_maddr);
    store<std::uint32_t>(page, start_info::kFlags, 0);
    return r;
}

void merge_shared_info(std::span<const std::uint8_t> saved, std::span<std::uint8_t> page)
{
    if (saved.size() != shinfo::kSize)
        throw Error("SHARED_INFO of " + std::to_string(saved.size()) + " bytes, expected 4096");
    if (page.size() != shinfo::kSize)
        throw Error("shared info buffer is not one page");
    std::size_t vcpus = shinfo::kLegacyVcpus * shinfo::kVcpuInfoSize;
    std::copy_n(saved.begin() + shinfo::kVcpuInfo, vcpus, page.begin() + shinfo::kVcpuInfo);
    std::copy_n(saved.begin() + shinfo::kArch, shinfo::kArchSize, page.begin() + shinfo::kArch);
    store<std::uint64_t>(page, shinfo::kFrameListList, 0);
    std::fill_n(page.begin() + shinfo::kEvtchnPending, shinfo::kEvtchnWordsBytes, 0);
    for (unsigned i = 0; i < shinfo::kLegacyVcpus; ++i)
        store<std::uint64_t>(page, shinfo::kVcpuInfo + i * shinfo::kVcpuInfoSize + shinfo::kVcpuPendingSel, 0);
    std::fill_n(page.begin() + shinfo::kEvtchnMask, shinfo::kEvtchnWordsBytes, 0xff);
}

P2mRoot p2m_root(std::span<const std::uint8_t> page)
{
    if (page.size() != shinfo::kSize)
        throw Error("shared info buffer is not one page");
    P2mRoot r;
    auto n = load<std::uint64_t>(page, shinfo::kMaxPfn);
    if (n == 0)
        throw Error("shared info: the guest declares an empty p2m (arch.max_pfn = 0)");
    r.max_pfn = n - 1;
    r.frame_list_list = load<std::uint64_t>(page, shinfo::kFrameListList);
    r.p2m_cr3 = load<std::uint64_t>(page, shinfo::kP2mCr3);
    return r;
}

StateBlob encode_tsc_info(const TscInfo& t)
{
    StateBlob b;
    b.type = rec::kX86TscInfo;
    append<std::uint32_t>(b.data, t.mode);
    append<std::uint32_t>(b.data, t.khz);
    append<std::uint64_t>(b.data, t.nsec);
    append<std::uint32_t>(b.data, t.incarnation);
    append<std::uint32_t>(b.data, 0);
    return b;
}

StateBlob encode_cpu_policy(std::uint32_t type, std::span<const std::uint8_t> entries)
{
    check_cpu_policy(type, entries);
    return StateBlob{type, std::vector<std::uint8_t>(entries.begin(), entries.end())};
}

std::size_t check_cpu_policy(std::uint32_t type, std::span<const std::uint8_t> body)
{
    const bool cpuid = type == rec::kX86CpuidPolicy;
    if (!cpuid && type != rec::kX86MsrPolicy)
        throw Error("record type " + hex(type) + " is not a CPU policy");
    const char* name = cpuid ? "X86_CPUID_POLICY" : "X86_MSR_POLICY";
    const std::size_t each = cpuid ? cpu_policy::kLeafSize : cpu_policy::kMsrSize;
    const std::size_t most = cpuid ? cpu_policy::kMaxLeaves : cpu_policy::kMaxMsrs;
    if (body.empty() || body.size() % each)
        throw StreamError(std::string(name) + " of " + std::to_string(body.size()) + " bytes, not a whole number of " +
                          std::to_string(each) + "-byte entries");
    if (body.size() / each > most)
        throw StreamError(std::string(name) + " of " + std::to_string(body.size() / each) + " entries, more than " +
                          std::to_string(most));
    return body.size() / each;
}

TscInfo parse_tsc_info(std::span<const std::uint8_t> body)
{
    if (body.size() != 24)
        throw StreamError("X86_TSC_INFO of " + std::to_string(body.size()) + " bytes, expected 24");
    TscInfo t;
    t.mode = load<std::uint32_t>(body, 0);
    t.khz = load<std::uint32_t>(body, 4);
    t.nsec = load<std::uint64_t>(body, 8);
    t.incarnation = load<std::uint32_t>(body, 16);
    if (load<std::uint32_t>(body, 20) != 0)
        throw StreamError("X86_TSC_INFO: reserved field not zero");
    return t;
}

} // namespace fastmig::xen
