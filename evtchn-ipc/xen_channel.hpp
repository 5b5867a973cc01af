// The Xen flavour of evtchn-ipc: the same shape as the process flavour (a
// region, a doorbell with notify / wait / drain / fd), between two domains.
//
//   XenDoorbell     an inter-domain event channel (libxenevtchn).  offer()
//                   on the side that publishes a port (the guest agent),
//                   bind() on the side that connects to it (dom0; also what
//                   SuspendChannel needs: a port Xen signals on suspend).
//   XenGrantShare   pages this domain grants to a peer (libxengnttab's
//                   gntshr: the guest agent).
//   XenGrantMap     pages a peer granted, mapped here (gnttab: dom0).
//   connect_agent   dom0's whole rendezvous with a guest's fastmig agent:
//                   read its xenstore keys, map its pages, bind its port.
//
// Why not libxenvchan: evtchn-ipc/README.md.  Everything a guest wrote is
// hostile (xenstore values through free_hints.hpp's parsers; the mapped
// pages are only ever read through hint_session's private copies).
// Errors are ChannelError with the call and errno; nothing here includes
// stream/ (a leaf) and nothing here logs: callers say what failed, where.
#pragma once

#include "evtchn-ipc/hint_session.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

struct xenevtchn_handle;
struct xengntdev_handle; // both xengnttab_handle and xengntshr_handle

namespace fastmig::ipc {

class ChannelError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class XenDoorbell {
public:
    XenDoorbell() = default;
    // A new unbound port in this domain that `peer` may bind to (publish
    // local_port() to it).
    static XenDoorbell offer(std::uint32_t peer);
    // A port bound to `remote_port` of domain `peer`.
    static XenDoorbell bind(std::uint32_t peer, std::uint32_t remote_port);

    XenDoorbell(XenDoorbell&& o) noexcept { swap(o); }
    XenDoorbell& operator=(XenDoorbell&& o) noexcept
    {
        XenDoorbell t(std::move(o));
        swap(t);
        return *this;
    }
    XenDoorbell(const XenDoorbell&) = delete;
    XenDoorbell& operator=(const XenDoorbell&) = delete;
    ~XenDoorbell();

    void notify();
    // Waits until the peer rings or until timeout; true when rung.  Every
    // event pending on the port is consumed (and the port unmasked).
    bool wait(std::chrono::milliseconds timeout);
    bool drain();
    int fd() const;
    std::uint32_t local_port() const { return port_; }
    bool valid() const { return xce_ != nullptr; }

private:
    void swap(XenDoorbell& o) noexcept
    {
        std::swap(xce_, o.xce_);
        std::swap(port_, o.port_);
    }
    xenevtchn_handle* xce_ = nullptr;
    std::uint32_t port_ = 0;
};

// Pages granted to a peer; unshared (and the grants ended) on destruction.
class XenGrantShare {
public:
    XenGrantShare(std::uint32_t peer, std::size_t pages);
    ~XenGrantShare();
    XenGrantShare(const XenGrantShare&) = delete;
    XenGrantShare& operator=(const XenGrantShare&) = delete;
    std::span<std::uint8_t> data() const { return {static_cast<std::uint8_t*>(addr_), pages_ * 4096}; }
    const std::vector<std::uint32_t>& refs() const { return refs_; }

private:
    xengntdev_handle* gntshr_ = nullptr;
    void* addr_ = nullptr;
    std::size_t pages_ = 0;
    std::vector<std::uint32_t> refs_;
};

// Pages a peer granted, mapped read-write; unmapped on destruction.
class XenGrantMap {
public:
    XenGrantMap(std::uint32_t peer, std::span<const std::uint32_t> refs);
    ~XenGrantMap();
    XenGrantMap(const XenGrantMap&) = delete;
    XenGrantMap& operator=(const XenGrantMap&) = delete;
    std::span<std::uint8_t> data() const { return {static_cast<std::uint8_t*>(addr_), pages_ * 4096}; }

private:
    xengntdev_handle* gnttab_ = nullptr;
    void* addr_ = nullptr;
    std::size_t pages_ = 0;
};

// dom0's connection to a guest's agent: the mapped region and the bound
// port, and the MailboxEnd hint_session drives.
class AgentChannel {
public:
    AgentChannel(std::uint32_t domid, std::span<const std::uint32_t> refs, std::uint32_t port);
    hints::MailboxEnd& end() { return end_; }
    const std::string& agent() const { return agent_; }

private:
    friend std::unique_ptr<AgentChannel> connect_agent(std::uint32_t, std::string&);
    XenGrantMap map_;
    XenDoorbell bell_;
    hints::MailboxEnd end_;
    std::string agent_;
};

// Reads /local/domain/<domid>/data/fastmig-agent/ and connects.  Null, with
// `why`, when the guest has no agent (why = "no agent": the common case,
// not worth a warning) or its keys are malformed or the connection fails.
std::unique_ptr<AgentChannel> connect_agent(std::uint32_t domid, std::string& why);

} // namespace fastmig::ipc
