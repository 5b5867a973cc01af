#include "libxl-plugin/qmp_dirty_log.hpp"

#include "stream/types.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace fastmig::emu {

namespace {

constexpr std::size_t kMaxReply = 64 << 10; // QMP replies here are a few bytes

class Qmp {
public:
    Qmp(const std::string& path, std::chrono::milliseconds timeout)
        : path_(path), deadline_(std::chrono::steady_clock::now() + timeout), timeout_(timeout)
    {
        sockaddr_un addr{};
        if (path.size() >= sizeof addr.sun_path)
            fail("the socket path is too long");
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
        fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
            fail(std::string("connect: ") + std::strerror(errno));
    }
    ~Qmp()
    {
        if (fd_ >= 0)
            ::close(fd_);
    }
    Qmp(const Qmp&) = delete;
    Qmp& operator=(const Qmp&) = delete;

    [[noreturn]] void fail(const std::string& why) const
    {
        throw Error("QEMU's QMP socket " + path_ + ": " + why);
    }

    // The first key of the next JSON object QEMU sends ("QMP", "return",
    // "error", "timestamp" for an event), and the whole line.
    std::string next(std::string& line)
    {
        for (;;) {
            auto nl = buf_.find('\n');
            if (nl != std::string::npos) {
                line = buf_.substr(0, nl);
                buf_.erase(0, nl + 1);
                auto q = line.find('"');
                auto q2 = q == std::string::npos ? q : line.find('"', q + 1);
                if (line.find_first_not_of(" \t\r") == std::string::npos)
                    continue;
                if (q2 == std::string::npos || line.find_first_not_of(" \t{") != q)
                    fail("not a QMP message: '" + line.substr(0, 80) + "'");
                return line.substr(q + 1, q2 - q - 1);
            }
            if (buf_.size() > kMaxReply)
                fail("a reply longer than 64 KiB");
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ -
                                                                              std::chrono::steady_clock::now());
            pollfd p{fd_, POLLIN, 0};
            int r = left.count() > 0 ? ::poll(&p, 1, int(left.count())) : 0;
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                fail("no answer within " + std::to_string(timeout_.count()) + " ms");
            char chunk[4096];
            ssize_t n = ::read(fd_, chunk, sizeof chunk);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                fail(n == 0 ? "QEMU closed the connection" : std::string("read: ") + std::strerror(errno));
            buf_.append(chunk, std::size_t(n));
        }
    }

    void command(const std::string& json, const char* what)
    {
        std::string out = json + "\n";
        for (std::size_t off = 0; off < out.size();) {
            ssize_t n = ::send(fd_, out.data() + off, out.size() - off, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                fail(std::string(what) + ": send: " + std::strerror(errno));
            off += std::size_t(n);
        }
        for (std::string line;;) {
            std::string key = next(line);
            if (key == "return")
                return;
            if (key == "error")
                fail(std::string(what) + " refused: " + line.substr(0, 200));
            // "timestamp": an event, not our answer.
        }
    }

    void greeting()
    {
        std::string line;
        if (next(line) != "QMP")
            fail("no QMP greeting: '" + line.substr(0, 80) + "'");
    }

private:
    std::string path_;
    std::chrono::steady_clock::time_point deadline_;
    std::chrono::milliseconds timeout_;
    int fd_ = -1;
    std::string buf_;
};

} // namespace

std::string qmp_socket_path(std::uint32_t domid)
{
    const char* dir = std::getenv("FASTMIG_QMP_DIR");
    return std::string(dir && *dir ? dir : "/var/run/xen") + "/qmp-libxl-" + std::to_string(domid);
}

void qmp_enable_dirty_log(const std::string& socket_path, std::chrono::milliseconds timeout)
{
    Qmp q(socket_path, timeout);
    q.greeting();
    q.command(R"({"execute": "qmp_capabilities"})", "qmp_capabilities");
    q.command(R"({"execute": "xen-set-global-dirty-log", "arguments": {"enable": true}})", "xen-set-global-dirty-log");
}

} // namespace fastmig::emu
