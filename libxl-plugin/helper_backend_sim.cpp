// The sim backend of the helper: libxl's domid names a sim guest.
//   save:    FASTMIG_HELPER_SIM_DOMAIN=sim:N if set, else sim:<domid>
//   restore: a new incoming sim guest, named in a log line to libxl
//   FASTMIG_HELPER_SIM_QEMU=1: the guest behaves as an HVM guest with a
//   device model towards libxl (switch_qemu_logdirty on and off), so that
//   the helper's side of that protocol is tested without Xen.
#include "libxl-plugin/helper_backend.hpp"

#include "libxl-plugin/cli.hpp"
#include "stream/domain/sim/sim.hpp"

#include <cstdlib>

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
