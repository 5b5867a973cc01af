// evtchn-ipc, process flavour: doorbells, shared regions, fd passing.
#define BOOST_TEST_MODULE ipc
#include <boost/test/unit_test.hpp>

#include "evtchn-ipc/doorbell.hpp"
#include "evtchn-ipc/fd_passing.hpp"
#include "evtchn-ipc/shared_region.hpp"
#include "stream/clock.hpp"
#include "stream/types.hpp"

#include <cstring>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

using namespace fastmig;
using namespace std::chrono_literals;

BOOST_AUTO_TEST_CASE(doorbell_times_out_then_wakes_once_for_many_rings)
{
    auto d = ipc::Doorbell::create();
    Stopwatch sw;
    BOOST_TEST(!d.wait(50ms));
    BOOST_TEST(sw.seconds() >= 0.045);
    BOOST_TEST(!d.drain());
    d.notify();
    d.notify();
    BOOST_TEST(d.wait(0ms));
    BOOST_TEST(!d.wait(0ms)); // both rings consumed by one wait
    std::thread t([&] {
        std::this_thread::sleep_for(20ms);
        d.notify();
    });
    BOOST_TEST(d.wait(2000ms));
    t.join();
    ipc::Doorbell moved = std::move(d);
    BOOST_TEST(moved.valid());
    BOOST_TEST(!d.valid());
}

BOOST_AUTO_TEST_CASE(shared_region_is_shared_and_checks_sizes)
{
    auto r = ipc::SharedRegion::create("test", 8192);
    BOOST_TEST(r.size() == 8192u);
    std::memcpy(r.data(), "hello", 6);
    auto other = ipc::SharedRegion::adopt(::dup(r.fd()), 8192);
    BOOST_TEST(std::strcmp(static_cast<char*>(other.data()), "hello") == 0);
    static_cast<char*>(other.data())[0] = 'j';
    BOOST_TEST(static_cast<char*>(r.data())[0] == 'j');
    BOOST_CHECK_THROW(ipc::SharedRegion::adopt(::dup(r.fd()), 1 << 20), Error); // peer lies about size
    BOOST_CHECK_THROW(ipc::SharedRegion::create("empty", 0), Error);
}

BOOST_AUTO_TEST_CASE(fds_pass_over_seqpacket_with_bounds_and_timeouts)
{
    int sv[2];
    BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    auto bell = ipc::Doorbell::create();
    const char msg[] = "attach";
    ipc::send_fds(sv[0], msg, sizeof msg, {bell.fd()}, 1000ms);
    auto m = ipc::recv_fds(sv[1], 1000ms);
    BOOST_TEST(m.data.size() == sizeof msg);
    BOOST_TEST(std::memcmp(m.data.data(), msg, sizeof msg) == 0);
    BOOST_REQUIRE(m.fds.size() == 1u);
    auto received = ipc::Doorbell::adopt(m.fds[0]);
    received.notify(); // same eventfd: the original wakes
    BOOST_TEST(bell.wait(100ms));

    Stopwatch sw;
    BOOST_CHECK_THROW(ipc::recv_fds(sv[1], 50ms), Error); // nothing sent
    BOOST_TEST(sw.seconds() < 1.0);
    std::vector<std::uint8_t> big(ipc::kMaxMessage + 1);
    BOOST_CHECK_THROW(ipc::send_fds(sv[0], big.data(), big.size(), {}, 100ms), Error);
    ::close(sv[0]);
    BOOST_CHECK_THROW(ipc::recv_fds(sv[1], 100ms), Error); // peer closed
    ::close(sv[1]);
    BOOST_TEST(ipc::connect_seqpacket("/nonexistent/fastmig.sock") < 0);
}
