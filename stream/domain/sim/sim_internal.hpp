// Internals shared by the sim backend's files: the registry's paths, the
// control-socket protocol, and the shared bits of the process and attacher.
//
// Control socket (run_dir()/N.sock, SOCK_SEQPACKET, one request per
// connection, text messages so `socat` can talk to it):
//   "INFO"    -> "ok id=N pid=P memory=B pages=N workload=W state=S"
//   "ATTACH"  -> "ok pages=N ram=BYTES control=BYTES" + fds [ram memfd,
//                control memfd, to-domain doorbell, from-domain doorbell]
//   "DESTROY" -> "ok", then the process exits; the connection stays open
//                until it is gone, so the requester can wait for the exit.
// Errors are "error <cause>".  Pause/resume do not use the socket (see
// sim_control.hpp: mailbox + doorbells).
#pragma once

#include "evtchn-ipc/fd_passing.hpp"
#include "stream/domain/sim/sim.hpp"

#include <chrono>
#include <map>
#include <string>

namespace fastmig::sim {

constexpr auto kRequestTimeout = std::chrono::seconds(10);
constexpr std::size_t kRamFdIndex = 0, kControlFdIndex = 1, kToDomainFdIndex = 2, kFromDomainFdIndex = 3;
constexpr std::size_t kAttachFds = 4;

std::string sock_path(int id);
std::string lock_path(int id);
std::string log_path(int id);

// Sends a request to domain `id`; the reply's text must start with "ok".
// Throws Error("sim domain N does not exist") when nobody listens (after
// cleaning a stale entry), or the domain's own error message.  With
// keep_open, the connection is returned in *conn (for DESTROY).
ipc::Message request(int id, const std::string& op, int* conn = nullptr);

// "k=v k=v" -> map (values have no spaces).
std::map<std::string, std::string> parse_kv(const std::string& text);

// Removes the files of domain ids whose process is gone.  Takes the
// registry lock.
void clean_stale();

} // namespace fastmig::sim
