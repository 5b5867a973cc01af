// fastmig-guest-agent: tells dom0 which page frames this guest's allocator
// holds free, so that a live migration skips them (guest-agent/README.md;
// the protocol: evtchn-ipc/README.md).
//
// At start it grants a few pages to dom0, offers an event channel, and
// publishes both in its xenstore home (data/fastmig-agent/, the protocol
// version last).  Then it sleeps until dom0 rings: a scan request reads
// /proc/kpageflags and answers the free ranges in batches.  After a
// migration the grants and the port are gone (the domain is new): a watch
// on its own keys (on the xenbus device: xenbus_watch.hpp), which the
// kernel re-registers on resume, and a check every 10 s make it offer new
// ones.
//
// Exit status: 0 on SIGTERM/SIGINT (keys withdrawn), 1 when it cannot set
// up at all, 2 for bad arguments.
#include "evtchn-ipc/hint_session.hpp"
#include "evtchn-ipc/xen_channel.hpp"
#include "guest-agent/free_pages.hpp"
#include "guest-agent/xenbus_watch.hpp"

extern "C" {
#include <xenstore.h>
}

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#ifndef AGENT_VERSION
#define AGENT_VERSION "0.1.0"
#endif

using namespace fastmig;
using namespace fastmig::ipc;

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

void log(const std::string& s) { std::fprintf(stderr, "fastmig-guest-agent: %s\n", s.c_str()); }

double cpu_ms()
{
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

std::uint64_t now_ns()
{
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return std::uint64_t(t.tv_sec) * 1000000000ull + std::uint64_t(t.tv_nsec);
}

struct Options {
    std::string kpageflags = "/proc/kpageflags";
    std::string iomem = "/proc/iomem"; // "none": scan every pfn
    std::size_t pages = 16;
    bool scan_only = false;
    bool verbose = false;
};

// One scan as dom0 asks for it: refused when this kernel checks freed pages
// or kpageflags cannot be read.
hints::ScanResult scan(const Options& o, std::uint64_t nr_pages)
{
    hints::ScanResult r;
    std::ifstream cmd("/proc/cmdline");
    std::stringstream line;
    line << cmd.rdbuf();
    if (agent::cmdline_poisons_pages(line.str())) {
        r.refused = true;
        r.refuse = hints::RefuseReason::page_poisoning;
        return r;
    }
    int fd = ::open(o.kpageflags.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        log("cannot open " + o.kpageflags + ": " + std::strerror(errno));
        r.refused = true;
        r.refuse = hints::RefuseReason::no_kpageflags;
        return r;
    }
    const std::uint64_t t0 = now_ns();
    const double c0 = cpu_ms();
    // Only the guest's RAM: its pfn space may be mostly holes (PVH, HVM).
    std::vector<agent::PfnSpan> spans;
    if (o.iomem != "none") {
        std::ifstream f(o.iomem);
        std::stringstream text;
        text << f.rdbuf();
        spans = agent::ram_spans_from_iomem(text.str(), nr_pages);
    }
    const std::size_t ram_spans = spans.size();
    if (spans.empty())
        spans.push_back({0, nr_pages}); // no map (no root, no file): every pfn
    agent::ScanStats st;
    try {
        r.ranges = agent::scan_kpageflags(fd, spans, st);
    } catch (const std::exception& e) {
        log(e.what());
        r.refused = true;
        r.refuse = hints::RefuseReason::no_kpageflags;
    }
    ::close(fd);
    r.scan_ns = now_ns() - t0;
    char msg[200];
    std::snprintf(msg, sizeof msg,
                  "scan: %llu pfns (%zu RAM spans), %llu free pages in %zu ranges, %.1f ms (%.1f ms CPU)",
                  (unsigned long long)st.pfns, ram_spans, (unsigned long long)st.free, r.ranges.size(),
                  r.scan_ns / 1e6, cpu_ms() - c0);
    if (o.verbose || o.scan_only)
        log(msg);
    return r;
}

// The channel to dom0 and its xenstore announcement.
class Channel {
public:
    Channel(xs_handle* xs, std::size_t pages)
        : xs_(xs), share_(0, pages), bell_(XenDoorbell::offer(0))
    {
        std::memset(share_.data().data(), 0, share_.data().size());
        end_.region = share_.data();
        end_.notify = [this] { bell_.notify(); };
        end_.wait = [this](std::chrono::milliseconds t) { return bell_.wait(t); };
        const std::string dir = std::string(hints::kXenstoreDir) + "/";
        put(dir + "agent", "fastmig-guest-agent " AGENT_VERSION);
        put(dir + "ring-ref", hints::format_ring_refs(share_.refs()));
        put(dir + "event-channel", std::to_string(bell_.local_port()));
        // Last: dom0 reads it first, so it never sees half an announcement.
        put(dir + "protocol", std::to_string(hints::kVersion));
    }
    hints::MailboxEnd& end() { return end_; }
    XenDoorbell& bell() { return bell_; }
    // Our announcement still stands (false after a migration: a new domain,
    // a new xenstore home).
    bool announced() const
    {
        unsigned len = 0;
        const std::string path = std::string(hints::kXenstoreDir) + "/event-channel";
        char* v = static_cast<char*>(xs_read(xs_, XBT_NULL, path.c_str(), &len));
        const bool ok = v && std::string(v, len) == std::to_string(bell_.local_port());
        std::free(v);
        return ok;
    }

private:
    void put(const std::string& path, const std::string& value)
    {
        if (!xs_write(xs_, XBT_NULL, path.c_str(), value.data(), unsigned(value.size())))
            throw ChannelError("cannot write " + path + " in xenstore: " + std::strerror(errno));
    }
    xs_handle* xs_;
    XenGrantShare share_;
    XenDoorbell bell_;
    hints::MailboxEnd end_;
};

void withdraw(xs_handle* xs) { xs_rm(xs, XBT_NULL, hints::kXenstoreDir); }

// Two xenstore connections: libxenstore's for requests, and the watch's own
// on the xenbus device (xenbus_watch.hpp: the static libxenstore cannot
// watch there).  libxenstore closes a connection for good after any reply
// it did not expect (xs_talkv: a watch event where a reply should be, a
// short read), and every later call then fails with EBADF; so the request
// connection carries no watch, and is opened again after any error.
struct Xs {
    xs_handle* h = nullptr;
    ~Xs() { reset(); }
    void reset()
    {
        if (h)
            xs_close(h);
        h = nullptr;
    }
    xs_handle* get()
    {
        if (!h && !(h = xs_open(0)))
            throw ChannelError(std::string("cannot connect to xenstore: ") + std::strerror(errno));
        return h;
    }
};

// The watch on our own event-channel key (relative: it follows the domain
// to its new home after a migration), or none, with the 10 s check to fall
// back on.  One log line per failure, not one per retry.
std::unique_ptr<agent::XenbusWatch> watch_own_key(bool& warned)
{
    const std::string watched = std::string(hints::kXenstoreDir) + "/event-channel";
    try {
        auto w = std::make_unique<agent::XenbusWatch>(agent::xenbus_device(), watched, "fastmig");
        if (warned)
            log("watching " + watched + " again");
        warned = false;
        return w;
    } catch (const std::exception& e) {
        if (!warned)
            log(std::string(e.what()) + "; relying on the 10 s check after a migration");
        warned = true;
        return nullptr;
    }
}

int serve(const Options& o)
{
    Xs req;
    try {
        req.get();
    } catch (const std::exception& e) {
        log(std::string(e.what()) + " (is this a Xen guest?)");
        return 1;
    }
    bool watch_warned = false;
    auto watch = watch_own_key(watch_warned);
    std::uint64_t next_watch_try = now_ns() + 60 * 1000000000ull;
    hints::HintServer server([&](std::uint64_t nr_pages) { return scan(o, nr_pages); });
    std::unique_ptr<Channel> ch;
    int status = 0;
    while (!g_stop) {
        try {
            if (!ch || !ch->announced()) {
                if (ch) {
                    log("the announcement is gone (migrated?): offering a new channel");
                    // Not closed: after a migration Linux has dropped the
                    // old port's irq, and unbinding it hits BUG_ON(irq < 0)
                    // in drivers/xen/evtchn.c (evtchn_unbind_from_user;
                    // Linux 6.1, seen under nested Xen: the agent died in
                    // the ioctl).  Its fd and pages stay with the process.
                    (void)ch.release();
                }
                ch = std::make_unique<Channel>(req.get(), o.pages);
                log("ready: " + std::to_string(o.pages) + " pages granted to dom0, event channel port " +
                    std::to_string(ch->bell().local_port()) + ", protocol " + std::to_string(hints::kVersion));
            }
            pollfd p[2] = {{ch->bell().fd(), POLLIN, 0}, {watch ? watch->fd() : -1, POLLIN, 0}};
            int r = ::poll(p, 2, 10000);
            if (r < 0 && errno != EINTR)
                throw ChannelError(std::string("poll: ") + std::strerror(errno));
            if (r > 0 && watch && p[1].revents) {
                try {
                    (void)watch->drain(); // the loop's check says what changed
                } catch (const std::exception& e) {
                    log(e.what());
                    watch.reset();
                    watch_warned = false;
                }
            }
            // A lost watch is opened again when idle, at most once a minute:
            // registering may block until its reply, never while dom0 waits.
            if (r == 0 && !watch && now_ns() >= next_watch_try) {
                watch = watch_own_key(watch_warned);
                next_watch_try = now_ns() + 60 * 1000000000ull;
            }
            if (r > 0 && (p[0].revents & POLLIN) && ch->bell().drain()) {
                std::string why;
                // Every request pending: a scan, then its next batches.
                while (server.handle(ch->end(), &why)) {
                    if (!why.empty())
                        log("refused a request: " + why);
                    why.clear();
                }
            }
        } catch (const std::exception& e) {
            // Set-up failed (no gntalloc, no evtchn device, xenstore down):
            // say so and try again later; the guest runs as without us.
            log(std::string(e.what()) + "; retrying in 10 s");
            ch.reset();
            req.reset();
            for (int i = 0; i < 100 && !g_stop; ++i)
                ::usleep(100000);
        }
    }
    ch.reset();
    try {
        withdraw(req.get());
    } catch (const std::exception&) {
    }
    log("stopped");
    return status;
}

void usage(FILE* f)
{
    std::fprintf(f,
                 "usage: fastmig-guest-agent [--pages N] [--verbose]\n"
                 "       fastmig-guest-agent --scan-only [--kpageflags FILE] [--iomem FILE|none] [--limit PFNS]\n"
                 "  Reports this guest's free page frames to dom0 for fastmig's live migration.\n"
                 "  --pages N       pages granted to dom0 for the answers (1..64, default 16)\n"
                 "  --scan-only     scan once, print what it found and what it cost, and exit\n"
                 "  --kpageflags F  read F instead of /proc/kpageflags (tests)\n"
                 "  --iomem F       take the RAM ranges from F instead of /proc/iomem;\n"
                 "                  none: scan every pfn (tests)\n"
                 "  --limit PFNS    scan only pfns below PFNS (--scan-only)\n"
                 "  --verbose       log every scan\n");
}

} // namespace

int main(int argc, char** argv)
{
    Options o;
    std::uint64_t limit = ~0ull;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                usage(stderr);
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--pages") {
            o.pages = std::strtoul(value().c_str(), nullptr, 10);
            if (o.pages < 1 || o.pages > hints::kMaxRegionPages) {
                usage(stderr);
                return 2;
            }
        } else if (a == "--scan-only") {
            o.scan_only = true;
        } else if (a == "--kpageflags") {
            o.kpageflags = value();
        } else if (a == "--iomem") {
            o.iomem = value();
        } else if (a == "--limit") {
            limit = std::strtoull(value().c_str(), nullptr, 10);
        } else if (a == "--verbose") {
            o.verbose = true;
        } else if (a == "--help" || a == "-h") {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (o.scan_only) {
        auto r = scan(o, limit);
        return r.refused ? 1 : 0;
    }
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    return serve(o);
}
