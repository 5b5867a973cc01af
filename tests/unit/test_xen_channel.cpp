// evtchn-ipc's Xen flavour where no hypervisor is: every call fails with
// a ChannelError that names what it tried (or, on a Xen host, works), the
// rendezvous with a guest that has no agent says so, and the Xen doorbell
// has the process doorbell's shape (what hint_session and SuspendChannel
// rely on).  Under Xen the flavour is exercised by the nested harness.
#define BOOST_TEST_MODULE xen_channel
#include <boost/test/unit_test.hpp>

#include "evtchn-ipc/doorbell.hpp"
#include "evtchn-ipc/xen_channel.hpp"

#include <unistd.h>

using namespace fastmig::ipc;
using namespace std::chrono_literals;

namespace {

// The shape both doorbells share.
template <class Bell>
constexpr bool doorbell_shape = requires(Bell b) {
    b.notify();
    { b.wait(1ms) } -> std::same_as<bool>;
    { b.drain() } -> std::same_as<bool>;
    { b.fd() } -> std::same_as<int>;
    { b.valid() } -> std::same_as<bool>;
};
static_assert(doorbell_shape<Doorbell>);
static_assert(doorbell_shape<XenDoorbell>);

bool have(const char* dev) { return ::access(dev, R_OK | W_OK) == 0; }

} // namespace

BOOST_AUTO_TEST_CASE(without_the_devices_every_call_names_its_cause)
{
    if (!have("/dev/xen/evtchn")) {
        try {
            XenDoorbell::offer(0);
            BOOST_FAIL("offer without /dev/xen/evtchn");
        } catch (const ChannelError& e) {
            BOOST_TEST(std::string(e.what()).find("event channel device") != std::string::npos);
        }
        BOOST_CHECK_THROW(XenDoorbell::bind(1, 5), ChannelError);
    }
    if (!have("/dev/xen/gntalloc")) {
        try {
            XenGrantShare s(0, 2);
            BOOST_FAIL("share without gntalloc");
        } catch (const ChannelError& e) {
            BOOST_TEST(std::string(e.what()).find("gntalloc") != std::string::npos);
        }
    }
    if (!have("/dev/xen/gntdev")) {
        std::uint32_t refs[] = {8, 9};
        BOOST_CHECK_THROW(XenGrantMap(1, refs), ChannelError);
    }
    // Sizes are refused before any device is opened.
    BOOST_CHECK_THROW(XenGrantShare(0, 0), ChannelError);
    BOOST_CHECK_THROW(XenGrantShare(0, 65), ChannelError);
    BOOST_CHECK_THROW(XenGrantMap(1, std::span<const std::uint32_t>()), ChannelError);
}

BOOST_AUTO_TEST_CASE(a_guest_without_an_agent_is_not_an_error)
{
    std::string why;
    auto c = connect_agent(0x7fef, why); // no such domain
    BOOST_TEST(!c);
    BOOST_TEST_INFO(why);
    BOOST_TEST((why == "no agent" || why.find("xenstore") != std::string::npos));
}
