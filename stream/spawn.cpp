// Starting a helper process that reports on a pipe (stream/spawn.hpp).
#include "stream/spawn.hpp"
#include "stream/types.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

namespace fastmig {

namespace {

// Above every number a child is given, so moving a descriptor here never
// overwrites one that is still to be moved.
constexpr int kMoveAbove = 64;
constexpr std::size_t kMaxFds = 16;

// The child's side, between fork and exec: only async-signal-safe calls
// (the parent may have other threads, whose locks a fork copies held).
[[noreturn]] void become_child(const SpawnSpec& spec, char* const* argv, int report_w)
{
    if (spec.detach) {
        ::setsid();
        if (::fork() != 0)
            ::_exit(0);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // First every descriptor out of the way of the numbers it will take
    // (one may already sit on another's number), then close-on-exec for
    // all but 0..2, then each onto its number (dup2 clears close-on-exec).
    int moved[kMaxFds + 1];
    const std::size_t n = spec.fds.size();
    for (std::size_t i = 0; i < n; ++i)
        moved[i] = ::fcntl(spec.fds[i].first, F_DUPFD, kMoveAbove);
    moved[n] = ::fcntl(report_w, F_DUPFD, kMoveAbove);
    ::close_range(3, ~0u, CLOSE_RANGE_CLOEXEC);
    for (std::size_t i = 0; i < n; ++i)
        ::dup2(moved[i], spec.fds[i].second);
    ::dup2(moved[n], spec.report_fd);
    ::execvp(argv[0], argv);
    [[maybe_unused]] ssize_t w = ::write(spec.report_fd, spec.exec_failed.data(), spec.exec_failed.size());
    ::_exit(127);
}

} // namespace

Spawned spawn_reporting(const SpawnSpec& spec)
{
    bool numbers_ok = spec.fds.size() <= kMaxFds && spec.report_fd >= 0 && spec.report_fd < kMoveAbove;
    for (const auto& [ours, theirs] : spec.fds)
        numbers_ok = numbers_ok && ours >= 0 && theirs >= 0 && theirs < kMoveAbove && theirs != spec.report_fd;
    if (!numbers_ok || spec.argv.empty())
        throw Error("spawn " + (spec.argv.empty() ? std::string("(no program)") : spec.argv[0]) +
                    ": bad descriptor numbers for the child (a bug)");
    // Everything the child needs is allocated here, before the fork.
    std::vector<char*> argv;
    for (const auto& a : spec.argv)
        argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0)
        throw_errno("pipe");
    Spawned s;
    s.report.reset(pipefd[0]);
    const pid_t child = ::fork();
    if (child == 0)
        become_child(spec, argv.data(), pipefd[1]);
    const int fork_errno = errno;
    ::close(pipefd[1]);
    if (child < 0) {
        errno = fork_errno;
        throw_errno("fork");
    }
    if (spec.detach) {
        // The intermediate child exits at once; the daemon is init's.
        int status;
        while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
        }
        return s;
    }
    s.pid = child;
    return s;
}

ReportLine read_report_line(int fd, std::optional<std::chrono::milliseconds> timeout, std::size_t max)
{
    ReportLine line;
    const auto deadline = std::chrono::steady_clock::now() + timeout.value_or(std::chrono::milliseconds(0));
    while (line.text.size() < max) {
        int wait_ms = -1;
        if (timeout) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) {
                line.timed_out = true;
                return line;
            }
            wait_ms = int(std::min<long long>(left.count(), 1 << 30));
        }
        pollfd p{fd, POLLIN, 0};
        int r = ::poll(&p, 1, wait_ms);
        if (r < 0 && errno != EINTR)
            throw_errno("poll");
        if (r <= 0)
            continue;
        char c;
        ssize_t n = ::read(fd, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            throw_errno("read");
        if (n == 0 || c == '\n')
            break;
        line.text += c;
    }
    return line;
}

} // namespace fastmig
