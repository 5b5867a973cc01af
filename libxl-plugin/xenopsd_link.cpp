#include "libxl-plugin/xenopsd_link.hpp"

#include "stream/transport.hpp"
#include "stream/types.hpp"

#include <cerrno>
#include <cstring>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace fastmig::emu {

namespace {

constexpr std::size_t kMaxLine = 128; // with its '\n' (emu-manager's XENOPSD_MSG_SIZE)

} // namespace

XenopsdLink::XenopsdLink(int out_fd, int in_fd, std::chrono::milliseconds done_timeout)
    : out_fd_(out_fd), in_fd_(in_fd), done_timeout_(done_timeout)
{
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
    if (stop_fd_ < 0)
        throw Error(std::string("eventfd: ") + std::strerror(errno));
}

XenopsdLink::~XenopsdLink()
{
    close();
    ::close(stop_fd_);
}

void XenopsdLink::start_reader()
{
    reader_ = std::thread([this] { read_loop(); });
}

void XenopsdLink::read_loop()
{
    std::string partial;
    auto finish = [&](const std::string& why, bool abort) {
        std::lock_guard lk(m_);
        if (closed_why_.empty())
            closed_why_ = why;
        aborted_ = aborted_ || abort;
        cv_.notify_all();
    };
    // Each end cancels the process's waits before it wakes the line's
    // waiter, so that whoever wakes finds the stream cancelled already.
    for (;;) {
        pollfd p[2] = {{in_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            cancel_all_io("the control pipe from xenopsd failed");
            finish(std::string("poll on xenopsd's control pipe: ") + std::strerror(errno), false);
            return;
        }
        if (p[1].revents)
            return;
        char buf[256];
        ssize_t n = ::read(in_fd_, buf, sizeof buf);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0) {
            const std::string why = n == 0 ? "xenopsd closed the control pipe"
                                           : std::string("reading xenopsd's control pipe: ") + std::strerror(errno);
            cancel_all_io("xenopsd closed the control pipe");
            finish(why, false);
            return;
        }
        partial.append(buf, std::size_t(n));
        for (std::size_t nl; (nl = partial.find('\n')) != std::string::npos;) {
            std::string line = partial.substr(0, nl);
            partial.erase(0, nl + 1);
            if (line == "abort") {
                cancel_all_io("xenopsd sent abort");
                finish("xenopsd sent abort (the task was cancelled)", true);
                return;
            }
            std::lock_guard lk(m_);
            lines_.push_back(line);
            cv_.notify_all();
        }
        if (partial.size() >= kMaxLine) {
            cancel_all_io("xenopsd sent an over-long control line");
            finish("xenopsd sent a control line longer than 128 bytes", false);
            return;
        }
    }
}

void XenopsdLink::send(const std::string& line)
{
    std::string l = line;
    if (l.size() + 1 > kMaxLine)
        l = l.substr(0, kMaxLine - 4) + "...";
    l += '\n';
    std::lock_guard lk(send_mutex_);
    if (out_fd_ < 0)
        throw Error("the control pipe to xenopsd is closed");
    std::size_t off = 0;
    while (off < l.size()) {
        ssize_t n = ::write(out_fd_, l.data() + off, l.size() - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            throw Error(std::string("writing to xenopsd's control pipe: ") + std::strerror(errno));
        off += std::size_t(n);
    }
}

void XenopsdLink::progress(unsigned percent)
{
    int p = int(std::min(percent, 100u));
    {
        std::lock_guard lk(m_);
        if (p <= last_percent_)
            return;
        last_percent_ = p;
    }
    // The four "\b" are literal backslash-b pairs: xenopsd strips them.
    send("info:\\b\\b\\b\\b" + std::to_string(p));
}

void XenopsdLink::send_error(const std::string& text) noexcept
{
    try {
        send("error:" + text);
    } catch (...) {
    }
}

std::string XenopsdLink::next_line(std::chrono::milliseconds timeout, const std::string& waiting_for)
{
    std::unique_lock lk(m_);
    if (!cv_.wait_for(lk, timeout, [&] { return !lines_.empty() || !closed_why_.empty(); }))
        throw Error("no answer from xenopsd to " + waiting_for + " within " + std::to_string(timeout.count()) +
                    " ms");
    if (!lines_.empty()) {
        std::string l = lines_.front();
        lines_.pop_front();
        return l;
    }
    throw Error(closed_why_ + " while waiting for its answer to " + waiting_for);
}

void XenopsdLink::round_trip(const std::string& request)
{
    send(request);
    std::string got = next_line(done_timeout_, "'" + request + "'");
    if (got != "done")
        throw Error("xenopsd answered '" + got + "' to '" + request + "', expected 'done'");
}

bool XenopsdLink::aborted() const
{
    std::lock_guard lk(m_);
    return aborted_;
}

void XenopsdLink::close() noexcept
{
    if (reader_.joinable()) {
        std::uint64_t one = 1;
        (void)!::write(stop_fd_, &one, sizeof one);
        reader_.join();
    }
    std::lock_guard lk(send_mutex_);
    if (out_fd_ >= 0)
        ::close(out_fd_);
    if (in_fd_ >= 0)
        ::close(in_fd_);
    out_fd_ = in_fd_ = -1;
}

} // namespace fastmig::emu
