// The sim backend of the helper: libxl's domid names a sim guest.
//   save:    FASTMIG_HELPER_SIM_DOMAIN=sim:N if set, else sim:<domid>
//   restore: a new incoming sim guest, named in a log line to libxl
//   FASTMIG_HELPER_SIM_QEMU=1: the guest behaves as an HVM guest with a
//   device model towards libxl (switch_qemu_logdirty on and off), so that
//   the helper's side of that protocol is tested without Xen.
//   FASTMIG_HELPER_SIM_PLATFORM=FILE: the destination's platform/ keys
//   (`key = value` lines, as "vcpu/0/affinity = 0110") for the emu-manager
//   drop-in; they are checked as on Xen and logged, not applied (a sim guest
//   has no HPET, clock offset, pCPUs or generation-id page).
#include "libxl-plugin/helper_backend.hpp"

#include "libxl-plugin/cli.hpp"
#include "stream/domain/sim/sim.hpp"

#include <cstdlib>
#include <fstream>
#include <map>

namespace fastmig::helper {

namespace {

class SimBackend : public HelperBackend {
public:
    std::string name() const override { return "sim"; }

    std::unique_ptr<Domain> open_source(std::uint32_t domid) override
    {
        const char* env = std::getenv("FASTMIG_HELPER_SIM_DOMAIN");
        int id = int(domid);
        if (env && *env) {
            try {
                id = cli::parse_sim_domain(env);
            } catch (const cli::UsageError& e) {
                throw Error(std::string("FASTMIG_HELPER_SIM_DOMAIN: ") + e.what());
            }
        }
        return sim::attach(id);
    }

    std::unique_ptr<DomainProvider> provider(const RestoreParams&) override
    {
        return std::make_unique<sim::SimProvider>();
    }
    std::vector<std::uint32_t> kinds() const override { return {kDomainKindSim}; }
    bool needs_qemu_logdirty(const Domain&) const override
    {
        const char* env = std::getenv("FASTMIG_HELPER_SIM_QEMU");
        return env && std::string(env) == "1";
    }
    // A sim guest has no xenstore or console ring: libxl gets zeros.
    RestoreResults restore_results(IncomingDomain&) override { return {}; }

    xen::PlatformKeyReader platform_keys(std::uint32_t) override
    {
        auto keys = std::make_shared<std::map<std::string, std::string>>();
        const char* path = std::getenv("FASTMIG_HELPER_SIM_PLATFORM");
        if (path && *path) {
            std::ifstream in(path);
            if (!in)
                throw Error(std::string("FASTMIG_HELPER_SIM_PLATFORM: cannot read ") + path);
            std::string line;
            while (std::getline(in, line)) {
                auto eq = line.find(" = ");
                if (eq != std::string::npos)
                    (*keys)[line.substr(0, eq)] = line.substr(eq + 3);
            }
        }
        return [keys](const std::string& key) {
            auto k = keys->find(key);
            return k == keys->end() ? std::string() : k->second;
        };
    }
    void apply_platform(std::uint32_t domid, const xen::RestorePlatform& p, PlatformStep step) override
    {
        std::string line = "domain " + std::to_string(domid) + " (sim): platform, not applied: ";
        if (step == PlatformStep::before_stream) {
            line += "before the stream: " + xen::describe(p);
        } else {
            if (p.generation_id.empty())
                return;
            auto g = xen::parse_generation_id(p.generation_id); // refused as on Xen
            line += "built: generation id " + std::to_string(g[0]) + ":" + std::to_string(g[1]);
        }
        if (log_)
            log_(line);
    }
};

} // namespace

std::unique_ptr<HelperBackend> make_sim_backend() { return std::make_unique<SimBackend>(); }

std::unique_ptr<HelperBackend> make_backend()
{
    const char* env = std::getenv("FASTMIG_HELPER_BACKEND");
    std::string b = env && *env ? env : "xen";
    if (b == "sim")
        return make_sim_backend();
    if (b == "xen")
        return make_xen_backend();
    throw Error("FASTMIG_HELPER_BACKEND='" + b + "' is not a backend (xen or sim)");
}

} // namespace fastmig::helper
