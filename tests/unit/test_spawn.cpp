// Starting a helper that reports on a pipe (stream/spawn.hpp): what the
// child gets, what it does not, and how its first line is read.
#define BOOST_TEST_MODULE spawn
#include <boost/test/unit_test.hpp>

#include "stream/spawn.hpp"
#include "stream/types.hpp"

#include <cerrno>
#include <string>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace fastmig;

namespace {

std::string rest_of(int fd)
{
    std::string s;
    char buf[256];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) != 0;) {
        if (n < 0 && errno == EINTR)
            continue;
        BOOST_REQUIRE(n > 0);
        s.append(buf, std::size_t(n));
    }
    return s;
}

int exit_status(pid_t pid)
{
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

SpawnSpec shell(const std::string& script, int report_fd)
{
    SpawnSpec s;
    s.argv = {"/bin/sh", "-c", script};
    s.report_fd = report_fd;
    return s;
}

} // namespace

BOOST_AUTO_TEST_CASE(first_line_is_read_alone_and_the_rest_stays_in_the_pipe)
{
    Spawned c = spawn_reporting(shell("echo port=5 >&4; echo result=ok >&4", 4));
    BOOST_REQUIRE(c.pid > 0);
    ReportLine first = read_report_line(c.report.get(), std::nullopt, 256);
    BOOST_TEST(first.text == "port=5");
    BOOST_TEST(!first.timed_out);
    BOOST_TEST(rest_of(c.report.get()) == "result=ok\n");
    BOOST_TEST(exit_status(c.pid) == 0);
}

BOOST_AUTO_TEST_CASE(given_descriptors_arrive_at_their_numbers_and_no_other_is_inherited)
{
    int p[2];
    BOOST_REQUIRE(::pipe(p) == 0); // not close-on-exec: the spawn must close it all the same
    const int stray = ::fcntl(p[1], F_DUPFD, 40);
    BOOST_REQUIRE(stray >= 40);
    SpawnSpec s = shell("echo given >&5; if [ -e /proc/self/fd/" + std::to_string(stray) +
                            " ]; then echo leaked >&3; else echo clean >&3; fi",
                        3);
    s.fds = {{p[1], 5}};
    Spawned c = spawn_reporting(s);
    ::close(p[1]);
    ::close(stray);
    BOOST_TEST(read_report_line(c.report.get(), std::chrono::seconds(10), 64).text == "clean");
    BOOST_TEST(exit_status(c.pid) == 0);
    BOOST_TEST(rest_of(p[0]) == "given\n");
    ::close(p[0]);
}

BOOST_AUTO_TEST_CASE(a_program_that_cannot_run_says_so_on_the_pipe)
{
    SpawnSpec s;
    s.argv = {"/nonexistent/fastmig-spawn-test"};
    s.exec_failed = "error: cannot execute it\n";
    Spawned c = spawn_reporting(s);
    BOOST_TEST(read_report_line(c.report.get(), std::chrono::seconds(10), 64).text == "error: cannot execute it");
    BOOST_TEST(exit_status(c.pid) == 127);
}

BOOST_AUTO_TEST_CASE(a_silent_child_times_out)
{
    Spawned c = spawn_reporting(shell("sleep 5", 3));
    ReportLine l = read_report_line(c.report.get(), std::chrono::milliseconds(100), 64);
    BOOST_TEST(l.timed_out);
    BOOST_TEST(l.text.empty());
    ::kill(c.pid, SIGKILL);
    exit_status(c.pid);
}

BOOST_AUTO_TEST_CASE(a_detached_child_leaves_nothing_to_wait_for)
{
    SpawnSpec s = shell("echo ok >&3", 3);
    s.detach = true;
    Spawned c = spawn_reporting(s);
    BOOST_TEST(c.pid == -1);
    BOOST_TEST(read_report_line(c.report.get(), std::chrono::seconds(10), 64).text == "ok");
}

BOOST_AUTO_TEST_CASE(a_child_number_taken_twice_is_refused_before_any_fork)
{
    SpawnSpec s = shell("true", 3);
    s.fds = {{0, 3}};
    BOOST_CHECK_THROW(spawn_reporting(s), Error);
}
