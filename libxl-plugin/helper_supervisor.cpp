#include "libxl-plugin/helper_supervisor.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace fastmig::helper {

namespace {

volatile pid_t g_worker = -1;  // in the supervisor
int g_release_fd = -1;         // in the worker: the pipe's write end

extern "C" void forward_signal(int sig)
{
    if (g_worker > 0)
        ::kill(g_worker, sig);
}

[[noreturn]] void supervise(int release_fd, pid_t worker)
{
    g_worker = worker;
    struct sigaction sa {};
    sa.sa_handler = forward_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    for (;;) {
        char c;
        ssize_t n = ::read(release_fd, &c, 1);
        if (n == 1)
            ::_exit(0); // complete delivered; the worker tears down alone
        if (n < 0 && errno == EINTR)
            continue;
        break; // EOF: the worker exited (or closed the pipe) without releasing
    }
    int st = 0;
    while (::waitpid(worker, &st, 0) < 0) {
        if (errno != EINTR)
            ::_exit(1);
    }
    if (WIFEXITED(st))
        ::_exit(WEXITSTATUS(st));
    std::fprintf(stderr, "libxl-save-helper (fastmig): worker process %d killed by signal %d\n", int(worker),
                 WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    ::_exit(1);
}

} // namespace

void split_supervisor() noexcept
{
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) < 0)
        return;
    const pid_t parent = ::getpid();
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) {
        ::close(fds[0]);
        ::close(fds[1]);
        return;
    }
    if (pid > 0) {
        ::close(fds[1]);
        // Hold none of libxl's pipes or the stream: a reader must see EOF
        // when the worker is gone, not when the supervisor is.  stderr stays.
        int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null >= 0) {
            ::dup2(null, STDIN_FILENO);
            ::dup2(null, STDOUT_FILENO);
        }
        if (fds[0] > 3)
            ::close_range(3, unsigned(fds[0]) - 1, 0);
        ::close_range(unsigned(fds[0]) + 1, ~0u, 0);
        supervise(fds[0], pid);
    }
    ::close(fds[0]);
    // Die with the supervisor (libxl's SIGKILL), unless it is already gone.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || ::getppid() != parent)
        ::_exit(1);
    g_release_fd = fds[1];
}

bool supervised() noexcept { return g_release_fd >= 0; }

void release_supervisor() noexcept
{
    if (g_release_fd < 0)
        return;
    // The supervisor's exit must not take the worker with it.
    ::prctl(PR_SET_PDEATHSIG, 0);
    char c = 'R';
    while (::write(g_release_fd, &c, 1) < 0 && errno == EINTR) {
    }
    ::close(g_release_fd);
    g_release_fd = -1;
    // The teardown is not urgent, and on a host that is also the destination
    // (a local migration, the nested harness) it would take CPU from the
    // restore the guest is waiting for: run it only when nothing else wants
    // the CPU.  Per thread in Linux: the caller does the teardown.
    sched_param sp{};
    (void)::sched_setscheduler(0, SCHED_IDLE, &sp);
}

} // namespace fastmig::helper
