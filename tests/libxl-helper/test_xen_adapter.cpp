// The helper's Xen backend adapter (libxl-plugin/helper_backend_xen.cpp) on a
// machine that may have no hypervisor: what it reports to libxl, that libxl's
// argv reaches the Xen backend, and that every entry point that needs Xen
// fails naming the domain, the phase and the cause.  Built only with the Xen
// libraries.  (A real save/restore needs the nested-Xen harness.)
#define BOOST_TEST_MODULE xen_adapter
#include <boost/test/unit_test.hpp>

#include "libxl-plugin/helper_backend.hpp"
#include "stream/domain/xen/xen_domain.hpp"

#include <algorithm>
#include <functional>
#include <string>

using namespace fastmig;
using namespace fastmig::helper;

namespace {
// Below DOMID_FIRST_RESERVED (0x7ff0) but never a real domain in tests.
constexpr std::uint32_t kNoSuchDomain = 0x7fef;

// The message of the Error f throws; anything else is reported as such, so
// that the checks on the text fail with it in the log.
std::string message_of(const std::function<void()>& f)
{
    std::string m = "(no error)";
    try {
        f();
    } catch (const Error& e) {
        m = e.what();
    } catch (const std::exception& e) {
        m = std::string("(not a fastmig Error) ") + e.what();
    }
    return m;
}

bool has(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// Just enough of an incoming domain for restore_results.
template <class Base>
class Incoming : public Base {
public:
    std::string name() const override { return "test"; }
    std::uint64_t nr_pages() const override { return 1; }
    void write_pages(std::span<const Pfn>, std::span<const std::uint8_t>) override {}
    void zero_pages(std::span<const Pfn>) override {}
    void read_page(Pfn, std::span<std::uint8_t>) override {}
    void restore_state(const std::vector<StateBlob>&) override {}
    void unpause() override {}
    DomainClock clock() const override { return {}; }
    void destroy() override {}
};

class BuiltXen : public Incoming<xen::XenIncomingDomain> {
public:
    xen::RestoreResult result() const override { return {0x1234, 0xabcdef}; }
};
} // namespace

BOOST_AUTO_TEST_CASE(reports_what_libxl_needs)
{
    auto b = make_xen_backend();
    BOOST_TEST(b->name() == "xen");
    auto k = b->kinds();
    BOOST_TEST((std::find(k.begin(), k.end(), kDomainKindXenPv) != k.end()));
    BOOST_TEST((std::find(k.begin(), k.end(), kDomainKindSim) == k.end()));
    // No CPUID/MSR policy in the stream: libxl must apply its own
    // (XGR_SDD_MISSING_CPUID | XGR_SDD_MISSING_MSR).
    BuiltXen d;
    BOOST_TEST(b->static_data_missing(d) == 3u);
}

BOOST_AUTO_TEST_CASE(restore_results_are_the_backends_frames)
{
    auto b = make_xen_backend();
    BuiltXen d;
    RestoreResults r = b->restore_results(d);
    BOOST_TEST(r.store_gfn == 0x1234u);
    BOOST_TEST(r.console_gfn == 0xabcdefu);
    Incoming<IncomingDomain> other;
    auto m = message_of([&] { b->restore_results(other); });
    BOOST_TEST(has(m, "not a Xen domain"));
}

BOOST_AUTO_TEST_CASE(open_source_fails_naming_domain_phase_and_cause)
{
    auto b = make_xen_backend();
    std::vector<std::string> lines;
    b->set_log([&](const std::string& l) { lines.push_back(l); });
    auto m = message_of([&] { b->open_source(kNoSuchDomain); });
    BOOST_TEST_MESSAGE(m);
    BOOST_TEST(m.find("xen:32751: setup: ") == 0u);
    BOOST_TEST((has(m, "cannot open the hypervisor interface") || has(m, "does not exist")));
    for (const auto& l : lines)
        BOOST_TEST(l.find("domain 32751 (xen): ") == 0u);
}

BOOST_AUTO_TEST_CASE(provider_builds_into_libxls_domain)
{
    auto b = make_xen_backend();
    RestoreParams p{kNoSuchDomain, 1, 0, 2, 0};
    auto prov = b->provider(p);
    // libxl's domid reaches the Xen backend; PV and HVM streams both need
    // Xen; a sim stream is refused before Xen is touched.
    auto sim = message_of([&] { prov->create(1024, kDomainKindSim, "sim:1"); });
    BOOST_TEST(sim.find("xen:32751: setup: ") == 0u);
    BOOST_TEST(has(sim, "not a Xen guest"));
    auto hvm = message_of([&] { prov->create(1024, kDomainKindXenHvm, "xen:9"); });
    BOOST_TEST(hvm.find("xen:32751: setup: ") == 0u);
    BOOST_TEST((has(hvm, "cannot open the hypervisor interface") || has(hvm, "does not exist")));
    auto pv = message_of([&] { prov->create(1024, kDomainKindXenPv, "xen:9"); });
    BOOST_TEST_MESSAGE(pv);
    BOOST_TEST(pv.find("xen:32751: setup: ") == 0u);
    BOOST_TEST((has(pv, "cannot open the hypervisor interface") || has(pv, "does not exist")));
}
