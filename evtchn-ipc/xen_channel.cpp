#include "evtchn-ipc/xen_channel.hpp"

// Xen's tool headers have no extern "C" guards of their own.
extern "C" {
#include <xenevtchn.h>
#include <xengnttab.h>
#include <xenstore.h>
}

#include <poll.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace fastmig::ipc {

namespace {

[[noreturn]] void fail(const std::string& what)
{
    throw ChannelError(what + ": " + std::strerror(errno));
}

using Clock = std::chrono::steady_clock;

} // namespace

// ---------------------------------------------------------------- doorbell

XenDoorbell XenDoorbell::offer(std::uint32_t peer)
{
    XenDoorbell d;
    d.xce_ = xenevtchn_open(nullptr, 0);
    if (!d.xce_)
        fail("cannot open the event channel device");
    xenevtchn_port_or_error_t p = xenevtchn_bind_unbound_port(d.xce_, peer);
    if (p < 0)
        fail("cannot allocate an event channel for domain " + std::to_string(peer));
    d.port_ = std::uint32_t(p);
    return d;
}

XenDoorbell XenDoorbell::bind(std::uint32_t peer, std::uint32_t remote_port)
{
    XenDoorbell d;
    d.xce_ = xenevtchn_open(nullptr, 0);
    if (!d.xce_)
        fail("cannot open the event channel device");
    xenevtchn_port_or_error_t p = xenevtchn_bind_interdomain(d.xce_, peer, remote_port);
    if (p < 0)
        fail("cannot bind to port " + std::to_string(remote_port) + " of domain " + std::to_string(peer));
    d.port_ = std::uint32_t(p);
    return d;
}

XenDoorbell::~XenDoorbell()
{
    if (!xce_)
        return;
    if (port_)
        xenevtchn_unbind(xce_, port_);
    xenevtchn_close(xce_);
}

void XenDoorbell::notify()
{
    if (xenevtchn_notify(xce_, port_) < 0)
        fail("cannot notify event channel port " + std::to_string(port_));
}

int XenDoorbell::fd() const { return xce_ ? xenevtchn_fd(xce_) : -1; }

bool XenDoorbell::drain()
{
    // xenevtchn_pending blocks when nothing is pending: poll first.
    bool rung = false;
    for (;;) {
        pollfd p{xenevtchn_fd(xce_), POLLIN, 0};
        int r = ::poll(&p, 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            fail("poll on the event channel");
        if (r == 0)
            return rung;
        xenevtchn_port_or_error_t port = xenevtchn_pending(xce_);
        if (port < 0)
            fail("reading the pending event channel");
        // The delivered port is masked until unmasked: unmask it whatever
        // it is, or it would never fire again.
        if (xenevtchn_unmask(xce_, evtchn_port_t(port)) < 0)
            fail("cannot unmask event channel port " + std::to_string(port));
        rung = rung || std::uint32_t(port) == port_;
    }
}

bool XenDoorbell::wait(std::chrono::milliseconds timeout)
{
    if (drain())
        return true;
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() < 0)
            left = std::chrono::milliseconds(0);
        pollfd p{xenevtchn_fd(xce_), POLLIN, 0};
        int r = ::poll(&p, 1, int(std::min<long long>(left.count(), 1 << 30)));
        if (r < 0 && errno != EINTR)
            fail("poll on the event channel");
        if (r > 0 && drain())
            return true;
        if (left.count() == 0)
            return false;
    }
}

// ------------------------------------------------------------ grant pages

XenGrantShare::XenGrantShare(std::uint32_t peer, std::size_t pages) : pages_(pages), refs_(pages)
{
    if (pages == 0 || pages > hints::kMaxRegionPages)
        throw ChannelError("cannot share " + std::to_string(pages) + " pages (1 to " +
                           std::to_string(hints::kMaxRegionPages) + ")");
    gntshr_ = xengntshr_open(nullptr, 0);
    if (!gntshr_)
        fail("cannot open the grant-sharing device (gntalloc)");
    addr_ = xengntshr_share_pages(gntshr_, peer, int(pages), refs_.data(), 1);
    if (!addr_) {
        int e = errno;
        xengntshr_close(gntshr_);
        errno = e;
        fail("cannot grant " + std::to_string(pages) + " pages to domain " + std::to_string(peer));
    }
}

XenGrantShare::~XenGrantShare()
{
    if (addr_)
        xengntshr_unshare(gntshr_, addr_, std::uint32_t(pages_));
    if (gntshr_)
        xengntshr_close(gntshr_);
}

XenGrantMap::XenGrantMap(std::uint32_t peer, std::span<const std::uint32_t> refs) : pages_(refs.size())
{
    if (refs.empty() || refs.size() > hints::kMaxRegionPages)
        throw ChannelError("cannot map " + std::to_string(refs.size()) + " granted pages");
    gnttab_ = xengnttab_open(nullptr, 0);
    if (!gnttab_)
        fail("cannot open the grant-table device (gntdev)");
    std::vector<std::uint32_t> r(refs.begin(), refs.end());
    addr_ = xengnttab_map_domain_grant_refs(gnttab_, std::uint32_t(r.size()), peer, r.data(),
                                            PROT_READ | PROT_WRITE);
    if (!addr_) {
        int e = errno;
        xengnttab_close(gnttab_);
        errno = e;
        fail("cannot map the " + std::to_string(r.size()) + " pages domain " + std::to_string(peer) + " granted");
    }
}

XenGrantMap::~XenGrantMap()
{
    if (addr_)
        xengnttab_unmap(gnttab_, addr_, std::uint32_t(pages_));
    if (gnttab_)
        xengnttab_close(gnttab_);
}

// ------------------------------------------------------------- rendezvous

AgentChannel::AgentChannel(std::uint32_t domid, std::span<const std::uint32_t> refs, std::uint32_t port)
    : map_(domid, refs), bell_(XenDoorbell::bind(domid, port))
{
    end_.region = map_.data();
    end_.notify = [this] { bell_.notify(); };
    end_.wait = [this](std::chrono::milliseconds t) { return bell_.wait(t); };
}

namespace {

struct XsHandle {
    xs_handle* h = xs_open(0);
    ~XsHandle()
    {
        if (h)
            xs_close(h);
    }
    // A value of at most 1 KiB (longer: refused as malformed), or nullopt.
    std::optional<std::string> read(const std::string& path, std::string& why)
    {
        unsigned len = 0;
        char* v = static_cast<char*>(xs_read(h, XBT_NULL, path.c_str(), &len));
        if (!v)
            return std::nullopt;
        std::string s(v, std::min(len, 1025u));
        std::free(v);
        if (len > 1024) {
            why = path + " is longer than 1 KiB";
            return std::nullopt;
        }
        return s;
    }
};

} // namespace

std::unique_ptr<AgentChannel> connect_agent(std::uint32_t domid, std::string& why)
{
    XsHandle xs;
    if (!xs.h) {
        why = std::string("cannot connect to xenstore: ") + std::strerror(errno);
        return nullptr;
    }
    const std::string dir = "/local/domain/" + std::to_string(domid) + "/" + hints::kXenstoreDir + "/";
    why.clear();
    auto proto = xs.read(dir + "protocol", why);
    if (!proto) {
        if (why.empty())
            why = "no agent";
        return nullptr;
    }
    std::uint16_t version;
    if (!hints::parse_protocol(*proto, version, why))
        return nullptr;
    auto refs_text = xs.read(dir + "ring-ref", why);
    auto port_text = xs.read(dir + "event-channel", why);
    if (!refs_text || !port_text) {
        if (why.empty())
            why = "the agent announced protocol " + *proto + " but no ring-ref or event-channel";
        return nullptr;
    }
    std::vector<std::uint32_t> refs;
    std::uint32_t port;
    if (!hints::parse_ring_refs(*refs_text, refs, why) || !hints::parse_port(*port_text, port, why))
        return nullptr;
    std::unique_ptr<AgentChannel> c;
    try {
        c = std::make_unique<AgentChannel>(domid, refs, port);
    } catch (const ChannelError& e) {
        why = e.what();
        return nullptr;
    }
    std::string ignored;
    if (auto a = xs.read(dir + "agent", ignored)) {
        // For logs only: printable ASCII, short.
        for (char ch : a->substr(0, 64))
            c->agent_ += (ch >= 32 && ch < 127) ? ch : '?';
    }
    return c;
}

} // namespace fastmig::ipc
