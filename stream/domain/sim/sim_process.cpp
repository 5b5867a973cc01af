// The sim domain process (`fastmig sim serve ...`): owns the guest's RAM
// (a memfd), its control page and doorbells, runs the workload threads, and
// serves the control socket and the mailbox from one control thread.
//
// Why a process: suspend/resume and the dirty log then cross a process
// boundary as they do under a hypervisor, so downtime measured on a sim
// guest includes a real wake-up of another process.
#include "stream/domain/sim/sim.hpp"
#include "stream/domain/sim/sim_control.hpp"
#include "stream/domain/sim/sim_internal.hpp"
#include "stream/domain/sim/sim_workload.hpp"

#include "evtchn-ipc/doorbell.hpp"
#include "evtchn-ipc/fd_passing.hpp"
#include "evtchn-ipc/shared_region.hpp"
#include "stream/clock.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

namespace fastmig::sim {

const char* state_name(std::uint32_t s)
{
    switch (s) {
    case kStateStarting: return "starting";
    case kStateRunning: return "running";
    case kStatePaused: return "paused";
    case kStateIncoming: return "incoming";
    }
    return "unknown";
}

const char* cmd_result_text(std::int32_t r)
{
    switch (r) {
    case kCmdOk: return "ok";
    case kCmdBadCommand: return "unknown command";
    case kCmdBadState: return "not in a state that allows this command";
    case kCmdNoConfig: return "no state restored before unpause";
    case kCmdBadConfig: return "restored state is invalid";
    case kCmdPauseTimeout: return "workload threads did not stop in time";
    }
    return "unknown result";
}

namespace {

// How long the domain itself waits for its threads to park.  Write units are
// microseconds long, so this only trips on a bug; the attacher has its own
// (usually much shorter) timeout.
constexpr auto kParkTimeout = std::chrono::seconds(5);
// A client must send its request promptly after connecting: the control
// thread serves the mailbox too and must not be held up.
constexpr auto kClientTimeout = std::chrono::milliseconds(500);

struct Args {
    int id = 0;
    bool incoming = false;
    std::uint64_t pages = 0;
    SimConfig cfg;
    int ready_fd = -1;
    int lock_fd = -1;
    // Incoming domains are born leased to their creator (policy destroy), so
    // a receiver killed at any instant never leaves one behind.
    std::int64_t lease_pid = 0;
};

std::uint64_t parse_u64(const std::string& opt, const char* v)
{
    char* end = nullptr;
    errno = 0;
    unsigned long long x = std::strtoull(v, &end, 10);
    if (errno || !*v || *end || *v == '-')
        throw Error("sim serve: bad value '" + std::string(v) + "' for " + opt);
    return x;
}

Args parse_args(int argc, char** argv)
{
    Args a;
    int i = 0;
    // Whatever precedes the first option ("fastmig", "sim", "serve") is the
    // command name, not ours to check.
    while (i < argc && std::strncmp(argv[i], "--", 2) != 0)
        ++i;
    for (; i < argc; ++i) {
        std::string o = argv[i];
        if (o == "--incoming") {
            a.incoming = true;
            continue;
        }
        if (i + 1 >= argc)
            throw Error("sim serve: " + o + " needs a value");
        const char* v = argv[++i];
        if (o == "--id")
            a.id = int(parse_u64(o, v));
        else if (o == "--memory")
            a.cfg.memory_bytes = parse_u64(o, v);
        else if (o == "--pages")
            a.pages = parse_u64(o, v);
        else if (o == "--workload")
            a.cfg.workload = v;
        else if (o == "--seed")
            a.cfg.seed = parse_u64(o, v);
        else if (o == "--rate-scale") {
            char* end = nullptr;
            a.cfg.rate_scale = std::strtod(v, &end);
            if (!*v || *end)
                throw Error("sim serve: bad value '" + std::string(v) + "' for --rate-scale");
        } else if (o == "--ready-fd")
            a.ready_fd = int(parse_u64(o, v));
        else if (o == "--lock-fd")
            a.lock_fd = int(parse_u64(o, v));
        else if (o == "--lease-pid")
            a.lease_pid = std::int64_t(parse_u64(o, v));
        else
            throw Error("sim serve: unknown option " + o);
    }
    if (a.id <= 0)
        throw Error("sim serve: --id N is required");
    if (a.incoming) {
        if (a.pages == 0 || a.pages > kMaxPages)
            throw Error("sim serve: --incoming needs --pages N (1.." + std::to_string(kMaxPages) + ")");
    } else {
        validate_config(a.cfg);
        a.pages = a.cfg.memory_bytes / kPageSize;
    }
    return a;
}

void write_all(int fd, const std::string& s)
{
    std::size_t done = 0;
    while (done < s.size()) {
        ssize_t n = ::write(fd, s.data() + done, s.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        done += std::size_t(n);
    }
}

class Server {
public:
    explicit Server(Args a) : a_(std::move(a)), name_("sim:" + std::to_string(a_.id)) {}
    ~Server() { shutdown(); }

    void setup();
    // Runs until DESTROY or SIGTERM; returns the exit code.
    int run();

private:
    void handle_client(int c);
    void handle_mailbox();
    std::int32_t do_command(std::uint32_t cmd);
    std::int32_t start_incoming();
    std::int32_t take_lease(std::int64_t pid, std::uint32_t policy);
    void drop_lease();
    // The holder died: apply the policy.  Returns true when the domain must
    // exit (destroy).
    bool lease_broken();
    std::string info_text() const;
    void shutdown();

    Args a_;
    std::string name_;
    int ram_fd_ = -1;
    std::uint8_t* ram_ = nullptr;
    ipc::SharedRegion ctl_region_;
    ControlHeader* ctl_ = nullptr;
    ipc::Doorbell to_domain_, from_domain_;
    std::unique_ptr<Workload> workload_;
    std::string workload_name_; // what INFO reports
    int listen_fd_ = -1;
    int sig_fd_ = -1;
    std::uint64_t last_seq_ = 0;
    int destroy_conn_ = -1;
    bool files_owned_ = false;
    int lease_fd_ = -1; // pidfd of the holder
};

int pidfd_open(pid_t pid)
{
    return int(::syscall(SYS_pidfd_open, pid, 0));
}

void Server::setup()
{
    // Termination arrives through a signalfd in the control loop, so every
    // thread (started below) must have these signals blocked.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    ::signal(SIGHUP, SIG_IGN);
    sig_fd_ = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sig_fd_ < 0)
        throw_errno("signalfd");

    if (a_.lock_fd < 0) {
        // Started by hand, not by create_domain: claim the id ourselves.
        a_.lock_fd = ::open(lock_path(a_.id).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (a_.lock_fd < 0)
            throw_errno("creating " + lock_path(a_.id));
        if (::flock(a_.lock_fd, LOCK_EX | LOCK_NB) < 0)
            throw Error("domain id " + std::to_string(a_.id) + " is in use");
    }
    {
        // Our pid in the lock file, for `list` and for cleanup after a crash.
        files_owned_ = true;
        std::string pid = std::to_string(::getpid()) + "\n";
        if (::ftruncate(a_.lock_fd, 0) == 0)
            [[maybe_unused]] ssize_t w = ::pwrite(a_.lock_fd, pid.data(), pid.size(), 0);
        ::fcntl(a_.lock_fd, F_SETFD, FD_CLOEXEC);
    }

    const std::uint64_t bytes = a_.pages * kPageSize;
    std::string ram_name = "fastmig-" + name_ + "-ram";
    ram_fd_ = ::memfd_create(ram_name.c_str(), MFD_CLOEXEC);
    if (ram_fd_ < 0)
        throw_errno("memfd_create");
    if (::ftruncate(ram_fd_, off_t(bytes)) < 0)
        throw_errno("sizing guest memory to " + std::to_string(bytes) + " bytes");
    ControlLayout lay = control_layout(a_.pages);
    ctl_region_ = ipc::SharedRegion::create("fastmig-" + name_ + "-control", lay.size);
    ctl_ = new (ctl_region_.data()) ControlHeader();
    ctl_->magic = kControlMagic;
    ctl_->version = kControlVersion;
    ctl_->header_size = sizeof(ControlHeader);
    ctl_->nr_pages = a_.pages;
    ctl_->dirty_offset = lay.dirty_offset;
    ctl_->free_offset = lay.free_offset;
    ctl_->bitmap_words = lay.words;
    ctl_->region_size = lay.size;
    ctl_->pid = ::getpid();
    ctl_->state.store(kStateStarting);
    to_domain_ = ipc::Doorbell::create();
    from_domain_ = ipc::Doorbell::create();

    if (!a_.incoming) {
        Layout l = make_layout(a_.cfg);
        unsigned threads = std::getenv("FASTMIG_SIM_FILL_THREADS") ? unsigned(std::atoi(std::getenv("FASTMIG_SIM_FILL_THREADS"))) : std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
        fill_memory(ram_fd_, l, a_.cfg.seed, free_words(ctl_region_.data()), threads, nullptr);
        ControlConfig& c = ctl_->config;
        c.memory_bytes = a_.cfg.memory_bytes;
        c.seed = a_.cfg.seed;
        c.rate_scale = a_.cfg.rate_scale;
        c.epoch = 0;
        std::snprintf(c.workload, sizeof c.workload, "%s", a_.cfg.workload.c_str());
        ctl_->config_valid.store(1);
    }

    // The workload writes through this mapping; only the pages it touches
    // are ever faulted in.  Everything else goes through pread/pwrite.
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, ram_fd_, 0);
    if (p == MAP_FAILED)
        throw_errno("mapping guest memory");
    ram_ = static_cast<std::uint8_t*>(p);

    ::unlink(sock_path(a_.id).c_str()); // the id is ours (we hold its lock)
    listen_fd_ = ipc::listen_seqpacket(sock_path(a_.id));
    files_owned_ = true;

    if (a_.incoming) {
        ctl_->state.store(kStateIncoming);
        if (a_.lease_pid > 0 && take_lease(a_.lease_pid, kLeaseDestroy) != kCmdOk)
            throw Error("the process creating it (pid " + std::to_string(a_.lease_pid) + ") is gone");
    } else {
        workload_ = std::make_unique<Workload>(a_.cfg, ram_, ctl_, dirty_words(ctl_region_.data()), 0, nullptr);
        workload_name_ = a_.cfg.workload;
        ctl_->state.store(kStateRunning);
        workload_->start();
    }
}

std::string Server::info_text() const
{
    return "ok id=" + std::to_string(a_.id) + " pid=" + std::to_string(::getpid()) +
           " memory=" + std::to_string(a_.pages * kPageSize) + " pages=" + std::to_string(a_.pages) +
           " workload=" + (workload_name_.empty() ? "-" : workload_name_) + " state=" + state_name(ctl_->state.load());
}

void Server::handle_client(int c)
{
    std::string op;
    try {
        ipc::Message m = ipc::recv_fds(c, kClientTimeout);
        ipc::close_fds(m); // clients send no fds; never keep foreign ones
        op.assign(m.data.begin(), m.data.end());
        if (op == "INFO") {
            ipc::send_message(c, info_text(), kClientTimeout);
        } else if (op == "ATTACH") {
            std::string r = "ok pages=" + std::to_string(a_.pages) + " ram=" + std::to_string(a_.pages * kPageSize) +
                            " control=" + std::to_string(ctl_region_.size());
            ipc::send_fds(c, r.data(), r.size(), {ram_fd_, ctl_region_.fd(), to_domain_.fd(), from_domain_.fd()},
                          kClientTimeout);
        } else if (op == "DESTROY") {
            ipc::send_message(c, "ok pid=" + std::to_string(::getpid()), kClientTimeout);
            destroy_conn_ = c; // closed by our exit: the requester waits for that
            return;
        } else {
            ipc::send_message(c, "error unknown request '" + op.substr(0, 32) + "'", kClientTimeout);
        }
    } catch (const Error& e) {
        std::fprintf(stderr, "%s: client request %s failed: %s\n", name_.c_str(), op.c_str(), e.what());
    }
    ::close(c);
}

std::int32_t Server::start_incoming()
{
    if (!ctl_->config_valid.load(std::memory_order_acquire))
        return kCmdNoConfig;
    // The attacher validated the state already, but it came from the
    // network and the control page is writable by any attacher: check again.
    ControlConfig c = ctl_->config;
    SimConfig cfg;
    if (std::memchr(c.workload, 0, sizeof c.workload) == nullptr)
        return kCmdBadConfig;
    cfg.workload = c.workload;
    cfg.memory_bytes = c.memory_bytes;
    cfg.seed = c.seed;
    cfg.rate_scale = c.rate_scale;
    try {
        validate_config(cfg);
        if (cfg.memory_bytes != a_.pages * kPageSize)
            return kCmdBadConfig;
        workload_ = std::make_unique<Workload>(cfg, ram_, ctl_, dirty_words(ctl_region_.data()), c.epoch, c.cursors);
    } catch (const Error& e) {
        std::fprintf(stderr, "%s: restored state rejected: %s\n", name_.c_str(), e.what());
        return kCmdBadConfig;
    }
    workload_name_ = cfg.workload;
    a_.cfg = cfg;
    ctl_->state.store(kStateRunning);
    workload_->start();
    return kCmdOk;
}

std::int32_t Server::take_lease(std::int64_t pid, std::uint32_t policy)
{
    drop_lease();
    if (policy == kLeaseNone || pid <= 0)
        return kCmdOk;
    if (policy > kLeaseDestroy)
        return kCmdBadCommand;
    int fd = pidfd_open(pid_t(pid));
    if (fd < 0)
        return kCmdNoSuchHolder;
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    lease_fd_ = fd;
    ctl_->lease_pid.store(pid);
    ctl_->lease_policy.store(policy);
    return kCmdOk;
}

void Server::drop_lease()
{
    if (lease_fd_ >= 0)
        ::close(lease_fd_);
    lease_fd_ = -1;
    ctl_->lease_pid.store(0);
    ctl_->lease_policy.store(kLeaseNone);
}

bool Server::lease_broken()
{
    std::uint32_t policy = ctl_->lease_policy.load();
    std::int64_t pid = ctl_->lease_pid.load();
    drop_lease();
    std::uint32_t st = ctl_->state.load();
    switch (policy) {
    case kLeaseResume:
        ctl_->logdirty.store(0);
        if (st == kStatePaused) {
            std::fprintf(stderr, "%s: migration tool (pid %lld) died before COMMIT; resuming\n", name_.c_str(),
                         (long long)pid);
            do_command(kCmdResume);
        }
        return false;
    case kLeaseKeepPaused:
        std::fprintf(stderr,
                     "%s: migration tool (pid %lld) died after COMMIT may have been sent; the domain stays %s "
                     "(in doubt: check the destination before resuming or destroying it)\n",
                     name_.c_str(), (long long)pid, state_name(st));
        return false;
    case kLeaseDestroy:
        if (st == kStateIncoming || st == kStatePaused) {
            std::fprintf(stderr, "%s: migration tool (pid %lld) died before COMMIT; destroying the copy\n",
                         name_.c_str(), (long long)pid);
            return true;
        }
        return false;
    default:
        return false;
    }
}

std::int32_t Server::do_command(std::uint32_t cmd)
{
    std::uint32_t st = ctl_->state.load();
    if (cmd == kCmdLease)
        return take_lease(ctl_->lease_pid.load(), ctl_->lease_policy.load());
    if (cmd == kCmdPause) {
        if (st == kStatePaused)
            return kCmdOk;
        if (st != kStateRunning)
            return kCmdBadState;
        if (!workload_->pause(std::chrono::duration_cast<std::chrono::milliseconds>(kParkTimeout)))
            return kCmdPauseTimeout;
        workload_->save_cursors(ctl_->config.cursors);
        ctl_->state.store(kStatePaused);
        return kCmdOk;
    }
    if (cmd == kCmdResume) {
        if (st == kStateRunning) {
            drop_lease();
            return kCmdOk;
        }
        if (st == kStateIncoming) {
            std::int32_t r = start_incoming();
            if (r == kCmdOk)
                drop_lease();
            return r;
        }
        if (st != kStatePaused)
            return kCmdBadState;
        drop_lease();
        ctl_->state.store(kStateRunning);
        workload_->resume();
        return kCmdOk;
    }
    return kCmdBadCommand;
}

void Server::handle_mailbox()
{
    std::uint64_t seq = ctl_->cmd_seq.load(std::memory_order_acquire);
    if (seq == last_seq_)
        return;
    std::int32_t r = do_command(ctl_->cmd.load(std::memory_order_relaxed));
    ctl_->ack_result.store(r, std::memory_order_relaxed);
    ctl_->ack_seq.store(seq, std::memory_order_release);
    last_seq_ = seq;
    from_domain_.notify();
}

int Server::run()
{
    for (;;) {
        pollfd p[4] = {{listen_fd_, POLLIN, 0}, {to_domain_.fd(), POLLIN, 0}, {sig_fd_, POLLIN, 0},
                       {lease_fd_, POLLIN, 0}};
        int r = ::poll(p, lease_fd_ >= 0 ? 4 : 3, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            throw_errno("poll");
        if (p[1].revents & POLLIN) {
            to_domain_.drain();
            handle_mailbox();
        }
        // A pidfd polls readable when its process has exited.  The mailbox
        // went first: a command posted just before the holder died counts.
        if (lease_fd_ >= 0 && p[3].fd == lease_fd_ && (p[3].revents & (POLLIN | POLLHUP)))
            if (lease_broken())
                return 0;
        if (p[2].revents & POLLIN) {
            signalfd_siginfo si;
            [[maybe_unused]] ssize_t n = ::read(sig_fd_, &si, sizeof si);
            std::fprintf(stderr, "%s: signal %u, exiting\n", name_.c_str(), si.ssi_signo);
            return 0;
        }
        if (p[0].revents & POLLIN) {
            int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (c >= 0)
                handle_client(c);
            if (destroy_conn_ >= 0)
                return 0;
        }
    }
}

void Server::shutdown()
{
    if (workload_) {
        workload_->stop();
        workload_.reset();
    }
    if (files_owned_) {
        // Socket first: once the lock file is gone the id may be reused.
        ::unlink(sock_path(a_.id).c_str());
        ::unlink(lock_path(a_.id).c_str());
        files_owned_ = false;
    }
    if (listen_fd_ >= 0)
        ::close(listen_fd_);
    listen_fd_ = -1;
    // destroy_conn_ stays open: the kernel closes it when we exit, which is
    // what the DESTROY requester waits for.
}

} // namespace

int serve_main(int argc, char** argv)
{
    Args a;
    try {
        a = parse_args(argc, argv);
    } catch (const Error& e) {
        std::fprintf(stderr, "%s\n", e.what());
        // Tell the creator why, if it gave us a ready pipe.
        for (int i = 0; i + 1 < argc; ++i)
            if (std::strcmp(argv[i], "--ready-fd") == 0) {
                int fd = std::atoi(argv[i + 1]);
                if (fd > 2)
                    write_all(fd, std::string("error: ") + e.what() + "\n");
            }
        return 2;
    }
    int ready = a.ready_fd;
    int id = a.id;
    auto server = std::make_unique<Server>(a);
    try {
        server->setup();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "sim:%d: %s\n", id, e.what());
        if (ready >= 0) {
            write_all(ready, std::string("error: ") + e.what() + "\n");
            ::close(ready);
        }
        return 1;
    }
    if (ready >= 0) {
        write_all(ready, "ok\n");
        ::close(ready);
    }
    int rc;
    try {
        rc = server->run();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "sim:%d: %s\n", id, e.what());
        rc = 1;
    }
    server.reset();
    return rc;
}

} // namespace fastmig::sim
