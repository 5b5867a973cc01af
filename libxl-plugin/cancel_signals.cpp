#include "libxl-plugin/cancel_signals.hpp"

#include "stream/transport.hpp"

#include <csignal>

namespace fastmig::helper {

namespace {

const char* volatile g_term_why = "SIGTERM";
struct sigaction g_sigpipe_before {};
bool g_sigpipe_changed = false;

extern "C" void on_term(int sig)
{
    fastmig::cancel_all_io(sig == SIGTERM ? g_term_why : "SIGINT");
}

} // namespace

void install_cancelling_signals(const char* term_why)
{
    g_term_why = term_why;
    struct sigaction sa {};
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, SIGTERM);
    sigaddset(&unblock, SIGINT);
    pthread_sigmask(SIG_UNBLOCK, &unblock, nullptr);
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    g_sigpipe_changed = sigaction(SIGPIPE, &ign, &g_sigpipe_before) == 0;
}

void restore_sigpipe()
{
    if (g_sigpipe_changed)
        sigaction(SIGPIPE, &g_sigpipe_before, nullptr);
    g_sigpipe_changed = false;
}

} // namespace fastmig::helper
