// The registry of sim domains: a directory (run_dir()) with, per domain id N,
//   N.lock  flock()ed by the domain process for its whole life; holds its pid
//   N.sock  its control socket
//   N.log   its stdout/stderr
// An id is claimed by creating N.lock with O_EXCL and locking it; the lock
// is taken by the creator and inherited by the domain process across exec,
// so there is no instant at which a live id looks free.  An entry whose lock
// nobody holds belongs to a dead process (e.g. SIGKILLed) and is removed by
// whoever notices (create, list, a failed connect).  Claims and cleanups
// serialise on run_dir()/registry.lock so a cleaner never removes an entry
// that is being created.
#include "stream/domain/sim/sim.hpp"
#include "stream/domain/sim/sim_internal.hpp"
#include "stream/domain/sim/sim_workload.hpp"

#include "stream/spawn.hpp"
#include "stream/types.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sstream>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace fastmig::sim {

namespace {

constexpr int kMaxIds = 100000;

bool mkdirs(const std::string& path, mode_t mode)
{
    std::string cur;
    std::stringstream ss(path);
    std::string part;
    if (!path.empty() && path[0] == '/')
        cur = "/";
    while (std::getline(ss, part, '/')) {
        if (part.empty())
            continue;
        cur += part + "/";
        if (::mkdir(cur.c_str(), mode) < 0 && errno != EEXIST)
            return false;
    }
    return ::access(path.c_str(), W_OK | X_OK) == 0;
}

// flock on registry.lock, held for the scope.
class RegistryLock {
public:
    RegistryLock()
    {
        std::string p = run_dir() + "/registry.lock";
        fd_ = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd_ < 0)
            throw_errno("sim registry: open " + p);
        while (::flock(fd_, LOCK_EX) < 0) {
            if (errno != EINTR) {
                ::close(fd_);
                throw_errno("sim registry: flock " + p);
            }
        }
    }
    ~RegistryLock() { ::close(fd_); }
    RegistryLock(const RegistryLock&) = delete;
    RegistryLock& operator=(const RegistryLock&) = delete;

private:
    int fd_;
};

std::vector<int> ids_in_dir(const char* suffix)
{
    std::vector<int> ids;
    DIR* d = ::opendir(run_dir().c_str());
    if (!d)
        return ids;
    while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        std::size_t dot = n.find('.');
        if (dot == std::string::npos || dot == 0 || n.substr(dot) != suffix)
            continue;
        if (!std::all_of(n.begin(), n.begin() + dot, [](char c) { return c >= '0' && c <= '9'; }) || dot > 6)
            continue;
        ids.push_back(std::atoi(n.substr(0, dot).c_str()));
    }
    ::closedir(d);
    std::sort(ids.begin(), ids.end());
    return ids;
}

// Caller holds the registry lock.
void clean_stale_locked()
{
    for (int id : ids_in_dir(".lock")) {
        int fd = ::open(lock_path(id).c_str(), O_RDWR | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct stat st;
        if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && ::fstat(fd, &st) == 0 && st.st_nlink > 0) {
            // Nobody holds it: the process is gone.  (nlink 0: the owner
            // removed it while exiting, nothing to do.)
            ::unlink(sock_path(id).c_str());
            ::unlink(lock_path(id).c_str());
        }
        ::close(fd);
    }
    // A socket without a lock file: left by a process that died after
    // removing its lock file.
    for (int id : ids_in_dir(".sock"))
        if (::access(lock_path(id).c_str(), F_OK) < 0)
            ::unlink(sock_path(id).c_str());
}

// Claims the lowest free id; returns it and the locked fd of N.lock.
int claim_id(int* lock_fd)
{
    RegistryLock rl;
    clean_stale_locked();
    for (int id = 1; id < kMaxIds; ++id) {
        int fd = ::open(lock_path(id).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            if (errno == EEXIST)
                continue;
            throw_errno("sim registry: create " + lock_path(id));
        }
        if (::flock(fd, LOCK_EX | LOCK_NB) < 0) {
            int e = errno;
            ::close(fd);
            errno = e;
            throw_errno("sim registry: lock " + lock_path(id));
        }
        ::unlink(sock_path(id).c_str()); // a leftover of an older owner
        *lock_fd = fd;
        return id;
    }
    throw Error("sim registry: no free domain id in " + run_dir());
}

pid_t pid_of(int id)
{
    int fd = ::open(lock_path(id).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[32] = {};
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    return n > 0 ? pid_t(std::atoi(buf)) : 0;
}

std::string log_tail(int id)
{
    int fd = ::open(log_path(id).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return "";
    std::string s(2048, '\0');
    off_t end = ::lseek(fd, 0, SEEK_END);
    off_t from = std::max<off_t>(0, end - off_t(s.size()));
    ssize_t n = ::pread(fd, s.data(), s.size(), from);
    ::close(fd);
    s.resize(n > 0 ? std::size_t(n) : 0);
    while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
        s.pop_back();
    std::size_t nl = s.rfind('\n');
    return nl == std::string::npos ? s : s.substr(nl + 1);
}

// Starts `fastmig sim serve ARGS --id N --lock-fd 4 --ready-fd 3` as a
// daemon (it survives the creator and its terminal, and init reaps it),
// waits for its "ok" on the ready pipe.
int spawn_domain(std::vector<std::string> args, std::chrono::milliseconds timeout)
{
    int lock_fd = -1;
    int id = claim_id(&lock_fd);
    auto fail = [&](const std::string& cause) -> Error {
        if (pid_t p = pid_of(id); p > 0)
            ::kill(p, SIGKILL);
        if (lock_fd >= 0)
            ::close(lock_fd);
        lock_fd = -1;
        clean_stale();
        return Error("sim domain " + std::to_string(id) + ": " + cause);
    };
    Fd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    Fd logfd(::open(log_path(id).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!devnull || !logfd)
        throw fail("cannot open /dev/null or " + log_path(id));
    SpawnSpec spec;
    spec.argv = {fastmig_binary(), "sim", "serve"};
    spec.argv.insert(spec.argv.end(), args.begin(), args.end());
    spec.argv.insert(spec.argv.end(), {"--id", std::to_string(id), "--lock-fd", "4", "--ready-fd", "3"});
    spec.fds = {{devnull.get(), 0}, {logfd.get(), 1}, {logfd.get(), 2}, {lock_fd, 4}};
    spec.report_fd = 3;
    spec.detach = true;
    spec.exec_failed = "error: cannot execute the fastmig binary (set FASTMIG_BIN)\n";
    Spawned daemon;
    try {
        daemon = spawn_reporting(spec);
    } catch (const Error& e) {
        throw fail(e.cause());
    }
    // The daemon holds the lock now (same open file); drop our reference so
    // its death alone frees the id.
    ::close(lock_fd);
    lock_fd = -1;
    ReportLine line;
    try {
        line = read_report_line(daemon.report.get(), timeout, 4096);
    } catch (const Error& e) {
        throw fail(e.cause());
    }
    if (line.timed_out)
        throw fail("not ready within " + std::to_string(timeout.count()) + " ms (killed)");
    if (line.text.rfind("ok", 0) == 0)
        return id;
    std::string cause;
    if (line.text.rfind("error: ", 0) == 0)
        cause = line.text.substr(7);
    else {
        cause = "the process exited before it was ready";
        if (std::string t = log_tail(id); !t.empty())
            cause += " (" + log_path(id) + ": " + t + ")";
    }
    throw fail(cause);
}

} // namespace

std::string run_dir()
{
    const char* env = std::getenv("FASTMIG_SIM_DIR");
    if (env && *env) {
        if (!mkdirs(env, 0700))
            throw Error(std::string("sim registry: cannot create ") + env);
        return env;
    }
    if (mkdirs("/run/fastmig/sim", 0755))
        return "/run/fastmig/sim";
    if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x) {
        std::string p = std::string(x) + "/fastmig/sim";
        if (mkdirs(p, 0700))
            return p;
    }
    std::string p = "/tmp/fastmig-" + std::to_string(::getuid()) + "/sim";
    if (!mkdirs(p, 0700))
        throw Error("sim registry: cannot create " + p);
    return p;
}

std::string sock_path(int id) { return run_dir() + "/" + std::to_string(id) + ".sock"; }
std::string lock_path(int id) { return run_dir() + "/" + std::to_string(id) + ".lock"; }
std::string log_path(int id) { return run_dir() + "/" + std::to_string(id) + ".log"; }

std::string fastmig_binary()
{
    if (const char* b = std::getenv("FASTMIG_BIN"); b && *b)
        return b;
    char buf[4096];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n > 0) {
        std::string self(buf, std::size_t(n));
        std::string base = self.substr(self.rfind('/') + 1);
        if (base == "fastmig")
            return self;
    }
    return "fastmig";
}

void clean_stale()
{
    RegistryLock rl;
    clean_stale_locked();
}

std::map<std::string, std::string> parse_kv(const std::string& text)
{
    std::map<std::string, std::string> kv;
    std::stringstream ss(text);
    std::string w;
    while (ss >> w)
        if (auto eq = w.find('='); eq != std::string::npos)
            kv[w.substr(0, eq)] = w.substr(eq + 1);
    return kv;
}

ipc::Message request(int id, const std::string& op, int* conn)
{
    const std::string name = "sim domain " + std::to_string(id);
    if (id <= 0 || id >= kMaxIds)
        throw Error(name + " does not exist");
    int s = ipc::connect_seqpacket(sock_path(id));
    if (s < 0) {
        if (errno == ENOENT || errno == ECONNREFUSED) {
            clean_stale();
            throw Error(name + " does not exist");
        }
        throw_errno(name + ": connect " + sock_path(id));
    }
    ipc::Message m;
    try {
        ipc::send_message(s, op, kRequestTimeout);
        m = ipc::recv_fds(s, kRequestTimeout);
    } catch (const Error& e) {
        ::close(s);
        clean_stale();
        throw Error(name + ": " + op + ": " + e.what());
    }
    std::string text(m.data.begin(), m.data.end());
    if (text.rfind("ok", 0) != 0) {
        ipc::close_fds(m);
        ::close(s);
        throw Error(name + ": " + (text.rfind("error ", 0) == 0 ? text.substr(6) : "bad reply '" + text + "'"));
    }
    if (conn)
        *conn = s;
    else
        ::close(s);
    return m;
}

int create_domain(const SimConfig& cfg, std::chrono::milliseconds timeout)
{
    try {
        validate_config(cfg); // say what is wrong without starting a process
    } catch (const Error& e) {
        throw Error(std::string("sim domain: ") + e.what());
    }
    std::ostringstream scale;
    scale.precision(17);
    scale << cfg.rate_scale;
    return spawn_domain({"--memory", std::to_string(cfg.memory_bytes), "--workload", cfg.workload, "--seed",
                         std::to_string(cfg.seed), "--rate-scale", scale.str()},
                        timeout);
}

int create_incoming_domain(std::uint64_t nr_pages, std::chrono::milliseconds timeout)
{
    if (nr_pages == 0 || nr_pages > kMaxPages)
        throw Error("incoming sim domain: bad size of " + std::to_string(nr_pages) + " pages");
    return spawn_domain({"--incoming", "--pages", std::to_string(nr_pages), "--lease-pid", std::to_string(::getpid())},
                        timeout);
}

SimInfo domain_info(int id)
{
    ipc::Message m = request(id, "INFO");
    ipc::close_fds(m);
    auto kv = parse_kv(std::string(m.data.begin(), m.data.end()));
    SimInfo i;
    i.id = id;
    i.pid = pid_t(std::atoll(kv["pid"].c_str()));
    i.memory_bytes = std::strtoull(kv["memory"].c_str(), nullptr, 10);
    i.workload = kv["workload"] == "-" ? "" : kv["workload"];
    i.state = kv["state"];
    return i;
}

std::vector<SimInfo> list_domains()
{
    clean_stale();
    std::vector<SimInfo> out;
    for (int id : ids_in_dir(".sock")) {
        try {
            out.push_back(domain_info(id));
        } catch (const Error&) {
            // Exited or still starting: not listed.
        }
    }
    return out;
}

void destroy_domain(int id)
{
    int conn = -1;
    ipc::Message m = request(id, "DESTROY", &conn);
    ipc::close_fds(m);
    pid_t pid = pid_t(std::atoll(parse_kv(std::string(m.data.begin(), m.data.end()))["pid"].c_str()));
    // The domain keeps this connection open until it exits: wait for the
    // hang-up, so that its memory is free when we return.
    auto deadline = std::chrono::steady_clock::now() + kRequestTimeout;
    bool gone = false;
    while (!gone) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            break;
        pollfd p{conn, POLLIN, 0};
        int r = ::poll(&p, 1, int(left.count()));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        if (r > 0) {
            char b[64];
            ssize_t n = ::recv(conn, b, sizeof b, MSG_DONTWAIT);
            gone = n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
        }
    }
    ::close(conn);
    if (!gone && pid > 0)
        ::kill(pid, SIGKILL); // it ignored the request: no domain outlives destroy
    clean_stale();
}

} // namespace fastmig::sim
