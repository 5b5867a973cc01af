// Passing file descriptors between processes: how the process flavour of
// evtchn-ipc "grants" a region or a doorbell to the peer.  A sim domain hands
// its RAM memfd, control region and doorbells to an attacher this way.
//
// Messages go over AF_UNIX SOCK_SEQPACKET (message boundaries kept, so a
// request is one recv), with the fds as SCM_RIGHTS.  Every size is bounded and
// every wait has a timeout, so a stuck or hostile peer costs at most the
// timeout.  The Xen flavour does not need this (grant references and event
// channel ports are plain integers carried in the payload).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace fastmig::ipc {

// Upper bounds: a control message is small, and so is the number of fds.
constexpr std::size_t kMaxMessage = 64 * 1024;
constexpr std::size_t kMaxFds = 16;

struct Message {
    std::vector<std::uint8_t> data;
    std::vector<int> fds; // owned by the receiver: close them
};

// Sends one message (data.size() <= kMaxMessage, fds.size() <= kMaxFds).
// The fds stay owned by the caller.
void send_fds(int sock, const void* data, std::size_t len, const std::vector<int>& fds,
              std::chrono::milliseconds timeout);
inline void send_message(int sock, const std::string& text, std::chrono::milliseconds timeout)
{
    send_fds(sock, text.data(), text.size(), {}, timeout);
}

// Receives one message.  Throws on timeout, on a truncated message or fd
// list (any fds that did arrive are closed), and on end of stream ("peer
// closed the connection").
Message recv_fds(int sock, std::chrono::milliseconds timeout);

// A connected SOCK_SEQPACKET client socket to a listening path, or -1 with
// errno set (ENOENT, ECONNREFUSED: nobody listens there).
int connect_seqpacket(const std::string& path);
// A listening SOCK_SEQPACKET socket bound to path (the path must not exist).
int listen_seqpacket(const std::string& path, int backlog = 16);

// Closes every fd of a message (for error paths).
void close_fds(Message& m);

} // namespace fastmig::ipc
