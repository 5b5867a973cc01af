#include "libxl-plugin/libxl_link.hpp"

#include "stream/transport.hpp"
#include "stream/types.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <poll.h>
#include <unistd.h>

namespace fastmig::helper {

namespace {
constexpr const char* kContext = "libxl-save-helper";
}

LibxlLink::LibxlLink(int out_fd, int in_fd, unsigned cbflags, bool save)
    : out_fd_(out_fd), in_fd_(in_fd), cbflags_(cbflags), save_(save)
{
}

void LibxlLink::send(const Frame& f)
{
    // Not cancellable on purpose: after SIGTERM the helper still owes libxl
    // its error log and `complete`, and a message is written whole or not at
    // all (libxl would misparse half of one).  Short waits: libxl reads its
    // end of the pipe from its event loop.
    std::lock_guard<std::mutex> l(m_);
    std::size_t off = 0;
    while (off < f.size()) {
        ssize_t n = ::write(out_fd_, f.data() + off, f.size() - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            throw_errno("writing a message to libxl");
        off += std::size_t(n);
    }
}

void LibxlLink::log(XtlLevel level, const std::string& text, int errnoval) noexcept
{
    if (completed_) {
        if (level >= XtlLevel::warn)
            std::fprintf(stderr, "libxl-save-helper (fastmig): %s\n", text.c_str());
        return;
    }
    try {
        send(encode_log(level, std::uint32_t(errnoval), kContext, text));
    } catch (...) {
    }
}

void LibxlLink::progress(const std::string& doing_what, std::uint64_t done, std::uint64_t total) noexcept
{
    if (completed_)
        return;
    try {
        send(encode_progress("xc", doing_what, done, total));
    } catch (...) {
    }
}

void LibxlLink::require(Msg m, const char* what) const
{
    bool legal = save_ ? m != Msg::static_data_done && m != Msg::restore_results : m != Msg::switch_qemu_logdirty;
    if (!legal)
        throw Error(std::string("libxl takes no ") + what + " message from a " + (save_ ? "save" : "restore") +
                    " helper");
    if (m != Msg::restore_results && m != Msg::complete && !provides(m))
        throw Error(std::string("libxl did not provide the ") + what + " callback (cbflags " +
                    std::to_string(cbflags_) + ")");
}

int LibxlLink::call(const Frame& f, Msg m, const char* what)
{
    if (completed_)
        throw Error(std::string("the ") + what + " message after complete: libxl reads nothing more");
    require(m, what);
    send(f);
    // One native int, exactly 4 bytes (nothing else is ours to read).
    int v = 0;
    std::uint8_t raw[sizeof v];
    try {
        if (m == Msg::complete) {
            // Read even after SIGTERM: this is the goodbye libxl waits on.
            std::size_t got = 0;
            while (got < sizeof raw) {
                pollfd p{in_fd_, POLLIN, 0};
                int r = ::poll(&p, 1, int(reply_timeout_.count()));
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0)
                    throw Error("no answer within " + std::to_string(reply_timeout_.count()) + " ms");
                ssize_t n = ::read(in_fd_, raw + got, sizeof raw - got);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n < 0)
                    throw_errno("read");
                if (n == 0)
                    throw Error("libxl closed the helper's stdin");
                got += std::size_t(n);
            }
        } else {
            // Through SocketSource without read-ahead: its waits are polls
            // that SIGTERM cancels.
            SocketSource in(in_fd_, reply_timeout_, false);
            in.read_exact({raw, sizeof raw});
        }
    } catch (const Error& e) {
        throw Error(std::string("waiting for libxl's answer to the ") + what + " callback: " + e.cause());
    }
    std::memcpy(&v, raw, sizeof v);
    return v;
}

int LibxlLink::suspend() { return call(encode_no_args(Msg::suspend), Msg::suspend, "suspend"); }

int LibxlLink::switch_qemu_logdirty(std::uint32_t domid, bool enable)
{
    return call(encode_switch_qemu_logdirty(domid, enable ? 1 : 0), Msg::switch_qemu_logdirty,
                "switch_qemu_logdirty");
}

int LibxlLink::static_data_done(unsigned missing)
{
    return call(encode_static_data_done(missing), Msg::static_data_done, "static_data_done");
}

void LibxlLink::restore_results(std::uint64_t store_gfn, std::uint64_t console_gfn)
{
    if (completed_)
        throw Error("restore_results after complete: libxl reads nothing more");
    require(Msg::restore_results, "restore_results");
    send(encode_restore_results(store_gfn, console_gfn));
}

int LibxlLink::complete(int retval, int errnoval)
{
    int r = call(encode_complete(retval, errnoval), Msg::complete, "complete");
    completed_ = true;
    if (on_complete_)
        on_complete_();
    return r;
}

} // namespace fastmig::helper
