// Why the guest agent has its own xenstore watch (guest-agent/xenbus_watch.hpp):
// libxenstore's static archive, which the static agent links, has no reader
// thread, so xs_watch takes the first message after its request for the
// reply.  Linux's xenbus device may queue the watch's first firing before
// the "OK" it synthesizes; xs_watch then fails with EINVAL (the agent's old
// "cannot watch ... (Invalid argument)").  Both watches meet the same fake
// xenstore (a Unix socket: libxenstore speaks the same bytes to a socket as
// to the device) answering in either order.  If a libxenstore ever passes
// the event-first case, the old watch would do again: the case says so.
#define BOOST_TEST_MODULE xenstore_watch
#include <boost/test/unit_test.hpp>

#include "guest-agent/xenbus_watch.hpp"
#include "tests/unit/xs_wire_fake.hpp"

extern "C" {
#include <xenstore.h>
}

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

using namespace fastmig;

namespace {

const std::string kPath = "data/fastmig-agent/event-channel";
const std::string kToken = "fastmig";

// A xenstore that accepts one connection, reads one request and answers
// the watch's first firing and its "OK" in the order asked.
struct FakeXenstore {
    std::string path;
    int listener = -1;
    std::thread t;
    explicit FakeXenstore(bool event_first)
    {
        char dir[] = "/tmp/fastmig-xs.XXXXXX";
        BOOST_REQUIRE(::mkdtemp(dir));
        path = std::string(dir) + "/socket";
        listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
        BOOST_REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        BOOST_REQUIRE(::listen(listener, 1) == 0);
        const std::string ev = test::xs_event(kPath, kToken);
        const std::string ok = test::xs_ok(agent::xs::kWatch);
        const std::string answer = event_first ? ev + ok : ok + ev;
        t = std::thread([this, answer] {
            const int c = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
            if (c < 0)
                return;
            std::string req;
            char b[1];
            if (test::read_xs_request(c, req) && ::write(c, answer.data(), answer.size()) == ssize_t(answer.size()))
                (void)::read(c, b, 1); // until the client hangs up
            ::close(c);
        });
    }
    int connect() const
    {
        const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
        BOOST_REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        return fd;
    }
    ~FakeXenstore()
    {
        if (t.joinable())
            t.join();
        ::close(listener);
        ::unlink(path.c_str());
        ::rmdir(path.substr(0, path.rfind('/')).c_str());
    }
};

// The agent's old watch: libxenstore.a's xs_watch.  True when it succeeded.
bool old_watch(const FakeXenstore& xs, int& err)
{
    ::setenv("XENSTORED_PATH", xs.path.c_str(), 1);
    xs_handle* h = xs_open(0);
    ::unsetenv("XENSTORED_PATH");
    BOOST_REQUIRE(h);
    const bool ok = xs_watch(h, kPath.c_str(), kToken.c_str());
    err = errno;
    xs_close(h);
    return ok;
}

} // namespace

BOOST_AUTO_TEST_CASE(static_libxenstore_fails_when_the_first_firing_comes_first)
{
    int err = 0;
    {
        FakeXenstore xs(false);
        BOOST_TEST(old_watch(xs, err)); // reply first: fine
    }
    {
        FakeXenstore xs(true);
        BOOST_TEST(!old_watch(xs, err), "libxenstore.a's xs_watch now survives an early event");
        BOOST_TEST(err == EINVAL);
    }
}

BOOST_AUTO_TEST_CASE(the_agents_watch_passes_both_orders)
{
    for (bool event_first : {false, true}) {
        FakeXenstore xs(event_first);
        agent::XenbusWatch w(xs.connect(), kPath, kToken);
        pollfd p{w.fd(), POLLIN, 0};
        if (!event_first) // the event after the reply is left for poll
            BOOST_TEST(::poll(&p, 1, 5000) == 1);
        BOOST_TEST(w.drain() == 1u);
    }
}
