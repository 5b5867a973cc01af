// The Xen backend proper, on a machine that may have no Xen: what can be
// checked without a hypervisor is that every entry point fails cleanly,
// naming the domain, the phase and the cause, and that the provider refuses
// kinds it cannot build before touching Xen.  (Real save/restore is proven
// only in the nested-Xen harness, tests/nested-xen/.)
#define BOOST_TEST_MODULE xen_backend
#include <boost/test/unit_test.hpp>

#include "stream/domain/xen/xen_domain.hpp"
#include "stream/domain/xen/xen_handles.hpp" // in_phase

#include <string>

using namespace fastmig;

namespace {
// Out of the range of real domain ids (DOMID_FIRST_RESERVED is 0x7ff0).
constexpr std::uint32_t kNoSuchDomain = 0x7fef;

std::string message_of(const std::function<void()>& f)
{
    try {
        f();
    } catch (const Error& e) {
        BOOST_TEST(e.has_context());
        return e.what();
    }
    return "(no error)";
}
} // namespace

BOOST_AUTO_TEST_CASE(attach_save_fails_with_domain_phase_and_cause)
{
    xen::SaveOptions opt;
    opt.log = [](const std::string&) {};
    auto m = message_of([&] { xen::attach_save(kNoSuchDomain, opt); });
    BOOST_TEST_MESSAGE(m);
    BOOST_TEST(m.find("xen:32751: setup: ") == 0u);
    // Without Xen: the hypervisor interface; on a Xen host: the domain.
    BOOST_TEST((m.find("cannot open the hypervisor interface") != std::string::npos ||
                m.find("does not exist") != std::string::npos));
}

BOOST_AUTO_TEST_CASE(attach_restore_fails_with_domain_phase_and_cause)
{
    xen::RestoreParams p;
    p.domid = kNoSuchDomain;
    p.log = [](const std::string&) {};
    auto m = message_of([&] { xen::attach_restore(p, 1024); });
    BOOST_TEST_MESSAGE(m);
    BOOST_TEST(m.find("xen:32751: setup: ") == 0u);
    BOOST_TEST((m.find("cannot open the hypervisor interface") != std::string::npos ||
                m.find("does not exist") != std::string::npos));
}

BOOST_AUTO_TEST_CASE(provider_refuses_other_kinds_first)
{
    xen::RestoreParams p;
    p.domid = 5;
    p.log = [](const std::string&) {};
    xen::XenProvider prov(p);
    auto sim = message_of([&] { prov.create(1024, kDomainKindSim, "sim:1"); });
    BOOST_TEST(sim.find("xen:5: setup: ") == 0u);
    BOOST_TEST(sim.find("not a Xen guest") != std::string::npos);
    BOOST_TEST(prov.last() == nullptr);
}

BOOST_AUTO_TEST_CASE(provider_takes_hvm_streams_to_xen)
{
    // An HVM/PVH stream is built like a PV one: it fails here only because
    // there is no Xen (or no such domain), with the domain, phase and cause.
    xen::RestoreParams p;
    p.domid = kNoSuchDomain;
    p.log = [](const std::string&) {};
    xen::XenProvider prov(p);
    auto hvm = message_of([&] { prov.create(1024, kDomainKindXenHvm, "xen:9"); });
    BOOST_TEST_MESSAGE(hvm);
    BOOST_TEST(hvm.find("xen:32751: setup: ") == 0u);
    BOOST_TEST((hvm.find("cannot open the hypervisor interface") != std::string::npos ||
                hvm.find("does not exist") != std::string::npos));
}

// in_phase labels an error that has no domain and phase yet with its own,
// and the error keeps its kind: it is thrown as the class the kind names, so
// an AuthError or InDoubtError from inside the backend is still caught as one.
template <class E> void check_in_phase_keeps(const E& thrown, ErrorKind kind)
{
    try {
        xen::in_phase("xen:7", Phase::restore, [&] { throw thrown; });
        BOOST_FAIL("nothing thrown");
    } catch (const E& e) {
        BOOST_TEST((e.kind() == kind));
        BOOST_TEST(e.has_context());
        BOOST_TEST(e.domain() == "xen:7");
        BOOST_TEST((e.phase() == Phase::restore));
        BOOST_TEST(e.cause() == thrown.cause());
    }
}

BOOST_AUTO_TEST_CASE(in_phase_labels_and_keeps_the_kind)
{
    check_in_phase_keeps(Error("mmap failed"), ErrorKind::local);
    check_in_phase_keeps(StreamError("bad record"), ErrorKind::stream);
    check_in_phase_keeps(AuthError("tag mismatch"), ErrorKind::auth);
    check_in_phase_keeps(InDoubtError("no DONE"), ErrorKind::in_doubt);
    // Already labelled: passed on as it is.
    try {
        xen::in_phase("xen:7", Phase::restore, [] { throw StreamError("xen:9", Phase::receive, "short read"); });
        BOOST_FAIL("nothing thrown");
    } catch (const StreamError& e) {
        BOOST_TEST(e.domain() == "xen:9");
        BOOST_TEST((e.phase() == Phase::receive));
    }
}
