// fake_xenopsd_xen's Host: what xenopsd does to real Xen domains around its
// emu-manager (ocaml/xenopsd/xc/domain.ml), for the nested-Xen harness
// (tests/nested-xen/job/xapi.sh), with libxenctrl and libxenstore:
//
//   suspend:     Domain.shutdown + shutdown_wait_for_ack: control/shutdown =
//                "suspend", the guest's ack (the node emptied), then Xen's
//                shutdown(suspend) (a PVH guest is always enlightened; no
//                QEMU, varstored or swtpm to stop)
//   build_pre:   Domain.make + build_pre: an HVM-container domain (PVH:
//                the LAPIC only), its vCPUs made (domain_max_vcpus), grant
//                limits and paging memory, the memory limit, the xenstore
//                tree xenopsd makes (its permissions, name, platform/
//                keys), and the store and console event channels
//   build_post:  memory/*, store/*, console/*, then @introduceDomain
//   finish:      unpause the destination, then destroy the source
//
// Not a toolstack: no devices (the guest has its console only), no
// ballooning, no QEMU.  It exists so that the drop-in runs on real Xen the
// way xenopsd drives it.
#include "tests/xapi/fake_xenopsd_host.hpp"

#ifndef __XEN_TOOLS__
#define __XEN_TOOLS__ 1
#endif
extern "C" {
#include <xenctrl.h>
#include <xenstore.h>
}

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace fastmig::fake_xenopsd {

namespace {

[[noreturn]] void fail(const std::string& what)
{
    throw std::runtime_error(what + ": " + std::strerror(errno));
}

class XenHost : public Host {
public:
    XenHost()
    {
        xch_ = xc_interface_open(nullptr, nullptr, 0);
        if (!xch_)
            fail("xc_interface_open");
        xs_ = xs_open(0);
        if (!xs_)
            fail("xs_open");
    }
    ~XenHost() override
    {
        xs_close(xs_);
        xc_interface_close(xch_);
    }

    std::string suspend(int domid, bool answer) override
    {
        std::string before = state(unsigned(domid));
        if (!answer)
            return before;
        const std::string path = dom_path(unsigned(domid)) + "/control/shutdown";
        write(path, "suspend");
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        bool acked = false;
        for (;;) {
            if (!acked && read(path).empty())
                acked = true;
            xc_domaininfo_t info{};
            if (!info_of(unsigned(domid), info))
                fail("domain " + std::to_string(domid) + " info");
            if ((info.flags & XEN_DOMINF_shutdown) &&
                ((info.flags >> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask) == SHUTDOWN_suspend)
                return before + (acked ? "" : " (suspended before its ack was seen)");
            if (std::chrono::steady_clock::now() > deadline)
                throw std::runtime_error("domain " + std::to_string(domid) + " did not suspend within 60 s (" +
                                         (acked ? "acked" : "no ack") + ")");
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }

    Built build_pre(const Opts& o) override
    {
        xen_domctl_createdomain cfg{};
        cfg.flags = XEN_DOMCTL_CDF_hvm | (o.hap ? XEN_DOMCTL_CDF_hap : 0);
        cfg.max_vcpus = unsigned(o.vcpus);
        cfg.max_evtchn_port = -1;
        cfg.max_grant_frames = 64; // xenopsd's defaults (platform/max_grant_frames)
        cfg.max_maptrack_frames = 1024;
        cfg.grant_opts = XEN_DOMCTL_GRANT_version(1);
        cfg.arch.emulation_flags = XEN_X86_EMU_LAPIC; // PVH: emulation_flags_pvh
        uint32_t domid = 0;                           // Xen chooses
        if (xc_domain_create(xch_, &domid, &cfg) < 0)
            fail("xc_domain_create");
        Built b;
        b.domid = domid;
        try {
            // XEN_DOMCTL_createdomain only sizes the vCPU array: the vCPUs
            // are made here, as xenopsd's build_pre (domain_max_vcpus) and
            // libxl__build_pre do.  Without them Xen takes the whole stream
            // and then refuses the HVM context with a bare EINVAL
            // (hvm_load_cpu_ctxt: d->vcpu[0] is NULL; its message is a
            // debug-build one): xapi-pvh-2109.
            if (xc_domain_max_vcpus(xch_, domid, unsigned(o.vcpus)) < 0)
                fail("xc_domain_max_vcpus " + std::to_string(o.vcpus));
            // xenopsd's memory model adds room for the special pages; 8 MiB
            // is more than a PVH guest's.
            if (xc_domain_setmaxmem(xch_, domid, (o.memory_mib + 8) * 1024) < 0)
                fail("xc_domain_setmaxmem");
            if (!o.hap) { // shadow paging: its memory, as build_pre's shadow allocation
                // Since Xen 4.17 (XSA-409) the paging pool is sized with
                // XEN_DOMCTL_set_paging_mempool_size, as libxl does; the old
                // SHADOW_OP_SET_ALLOCATION gave EINVAL in the first nested run.
                const std::uint64_t bytes = std::uint64_t(o.memory_mib / 64 + 8) << 20;
                if (xc_set_paging_mempool_size(xch_, domid, bytes) < 0)
                    fail("paging mempool size");
            }
            xenstore_tree(domid, o);
            int store = xc_evtchn_alloc_unbound(xch_, domid, 0);
            int console = xc_evtchn_alloc_unbound(xch_, domid, 0);
            if (store < 0 || console < 0)
                fail("xc_evtchn_alloc_unbound");
            b.store_port = unsigned(store);
            b.console_port = unsigned(console);
            b.note = "domain " + std::to_string(domid) + ": " + (o.hap ? "hvm+hap" : "hvm, shadow paging") +
                     ", LAPIC only (PVH), " + describe(domid);
        } catch (...) {
            restore_failed(b);
            throw;
        }
        memory_mib_ = o.memory_mib;
        return b;
    }

    void build_post(const Built& b, unsigned long long store_mfn, unsigned long long console_mfn) override
    {
        const std::string d = dom_path(b.domid);
        const std::string kib = std::to_string(memory_mib_ * 1024);
        write(d + "/memory/static-max", kib);
        write(d + "/memory/target", kib);
        write(d + "/domid", std::to_string(b.domid));
        write(d + "/store/port", std::to_string(b.store_port));
        write(d + "/store/ring-ref", std::to_string(store_mfn));
        write(d + "/console/port", std::to_string(b.console_port));
        write(d + "/console/ring-ref", std::to_string(console_mfn));
        write(d + "/console/limit", "65536");
        write("/libxl/" + std::to_string(b.domid) + "/type", "PVH");
        if (!xs_introduce_domain(xs_, b.domid, store_mfn, b.store_port))
            fail("xs_introduce_domain " + std::to_string(b.domid));
    }

    std::string describe_failed(const Built& b) override { return "domain " + std::to_string(b.domid) + ": " + describe(b.domid); }

    void restore_failed(const Built& b) override
    {
        if (b.domid == 0)
            return;
        xc_domain_destroy(xch_, b.domid);
        xs_rm(xs_, XBT_NULL, dom_path(b.domid).c_str());
    }

    std::string finish_restore(unsigned domid) override
    {
        if (xc_domain_unpause(xch_, domid) < 0)
            fail("xc_domain_unpause " + std::to_string(domid));
        return "domain " + std::to_string(domid) + " unpaused";
    }

    std::string finish_migration(int source, unsigned destination) override
    {
        std::string s = finish_restore(destination);
        if (xc_domain_destroy(xch_, uint32_t(source)) < 0)
            fail("xc_domain_destroy " + std::to_string(source));
        xs_rm(xs_, XBT_NULL, dom_path(unsigned(source)).c_str());
        return s + ", source domain " + std::to_string(source) + " destroyed";
    }

private:
    // Xen 4.17's libxenctrl has no getinfo_single.
    bool info_of(unsigned domid, xc_domaininfo_t& info)
    {
        return xc_domain_getinfolist(xch_, domid, 1, &info) == 1 && info.domain == domid;
    }

    // What Xen says of a domain the fake built: its vCPUs, memory and
    // paging pool (the facts a refused restore turns on).
    std::string describe(unsigned domid)
    {
        xc_domaininfo_t info{};
        if (!info_of(domid, info))
            return "gone";
        std::string s = info.max_vcpu_id == XEN_INVALID_MAX_VCPU_ID
                            ? std::string("no vCPUs")
                            : std::to_string(info.max_vcpu_id + 1) + " vCPUs (" +
                                  std::to_string(info.nr_online_vcpus) + " online)";
        s += ", " + std::to_string(info.tot_pages) + " pages of max " + std::to_string(info.max_pages);
        std::uint64_t pool = 0;
        if (xc_get_paging_mempool_size(xch_, domid, &pool) == 0)
            s += ", paging pool " + std::to_string(pool >> 20) + " MiB";
        return s + ", " + state(domid);
    }

    static std::string dom_path(unsigned domid) { return "/local/domain/" + std::to_string(domid); }

    std::string state(unsigned domid)
    {
        xc_domaininfo_t info{};
        if (!info_of(domid, info))
            return "gone";
        if (info.flags & XEN_DOMINF_shutdown)
            return "shut down";
        return (info.flags & XEN_DOMINF_paused) ? "paused" : "running";
    }

    std::string read(const std::string& path)
    {
        unsigned len = 0;
        char* v = static_cast<char*>(xs_read(xs_, XBT_NULL, path.c_str(), &len));
        std::string out = v ? std::string(v, len) : std::string();
        free(v);
        return out;
    }
    void write(const std::string& path, const std::string& value)
    {
        if (!xs_write(xs_, XBT_NULL, path.c_str(), value.data(), unsigned(value.size())))
            fail("xenstore write " + path);
    }
    void perms(const std::string& path, unsigned owner, unsigned reader)
    {
        xs_permissions p[2] = {{owner, XS_PERM_NONE}, {reader, XS_PERM_READ}};
        if (!xs_set_permissions(xs_, XBT_NULL, path.c_str(), p, reader == owner ? 1 : 2))
            fail("xenstore permissions " + path);
    }

    // Domain.make's tree: the domain's directory readable by the guest, the
    // directories it writes its own, the platform/ keys.
    void xenstore_tree(unsigned domid, const Opts& o)
    {
        const std::string d = dom_path(domid);
        xs_rm(xs_, XBT_NULL, d.c_str());
        if (!xs_mkdir(xs_, XBT_NULL, d.c_str()))
            fail("xenstore mkdir " + d);
        perms(d, 0, domid);
        for (const char* sub : {"cpu", "memory"}) {
            const std::string p = d + "/" + sub;
            xs_mkdir(xs_, XBT_NULL, p.c_str());
            perms(p, 0, domid);
        }
        for (const char* sub : {"device", "control", "data", "error", "drivers", "feature", "attr", "messages",
                                "vm-data"}) {
            const std::string p = d + "/" + sub;
            xs_mkdir(xs_, XBT_NULL, p.c_str());
            perms(p, domid, domid);
        }
        write(d + "/name", o.name);
        write(d + "/control/platform-feature-multiprocessor-suspend", "1");
        write(d + "/control/platform-feature-xs_reset_watches", "1");
        if (!o.platform_file.empty()) {
            std::ifstream in(o.platform_file);
            if (!in)
                throw std::runtime_error("cannot read " + o.platform_file);
            std::string line;
            while (std::getline(in, line)) {
                auto eq = line.find(" = ");
                if (eq != std::string::npos)
                    write(d + "/platform/" + line.substr(0, eq), line.substr(eq + 3));
            }
        }
    }

    xc_interface* xch_ = nullptr;
    xs_handle* xs_ = nullptr;
    unsigned long memory_mib_ = 0;
};

} // namespace

std::unique_ptr<Host> make_xen_host() { return std::make_unique<XenHost>(); }

} // namespace fastmig::fake_xenopsd
