// The simulated domain: public API used by the engine, the command line and
// the tests.  A sim domain is a process of its own (like a guest under a
// hypervisor): its RAM is a memfd, its dirty log an atomic bitmap in shared
// memory, and workload threads write its memory like a guest would.  The
// migration tool attaches to it by id; suspend/resume cross the process
// boundary through evtchn-ipc (shared page + doorbells), never through the
// slow control socket.
#pragma once

#include "stream/domain.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fastmig::sim {

struct SimConfig {
    std::uint64_t memory_bytes = 1ull << 30; // multiple of kPageSize
    std::string workload = "idle";           // see workload_names()
    std::uint64_t seed = 1;                  // content and workload randomness
    double rate_scale = 1.0;                 // multiplies the workload's dirty rate
};

// Names accepted by SimConfig::workload, and a one-line description of each.
std::vector<std::pair<std::string, std::string>> workload_names();

struct SimInfo {
    int id = 0;
    pid_t pid = 0;
    std::uint64_t memory_bytes = 0;
    std::string workload;   // empty for an incoming domain not yet restored
    std::string state;      // "running", "paused", "incoming"
};

// Directory holding the sim domains' sockets: $FASTMIG_SIM_DIR, else
// /run/fastmig/sim when writable, else $XDG_RUNTIME_DIR/fastmig/sim, else
// /tmp/fastmig-<uid>/sim.  Created on demand.
std::string run_dir();

// Starts a sim domain process with the workload running; returns its id once
// its memory is filled and it accepts attaches.  Errors: bad config, out of
// memory, process failed to start (message names the cause).
int create_domain(const SimConfig& cfg, std::chrono::milliseconds timeout = std::chrono::minutes(5));
// Starts an empty, paused domain of nr_pages that waits for a stream.
int create_incoming_domain(std::uint64_t nr_pages, std::chrono::milliseconds timeout = std::chrono::seconds(30));

std::vector<SimInfo> list_domains();
SimInfo domain_info(int id);            // throws Error "sim domain N does not exist"
void destroy_domain(int id);             // throws Error if it does not exist

std::unique_ptr<Domain> attach(int id);
std::unique_ptr<IncomingDomain> attach_incoming(int id);

// Creates incoming sim domains for the receiver.
class SimProvider : public DomainProvider {
public:
    // The sim process maps the whole guest (its workload writes through the
    // mapping) and inherits this process's limits: the address space must
    // hold it, and the host must have the memory available now.
    void check_capacity(std::uint64_t nr_pages, std::uint32_t kind, const std::string& source_name) override;
    std::unique_ptr<IncomingDomain> create(std::uint64_t nr_pages, std::uint32_t kind,
                                           const std::string& source_name) override;
};

// Entry point of the sim domain process itself (`fastmig sim serve ...`,
// started by create_domain through the fastmig binary).  Returns the exit code.
int serve_main(int argc, char** argv);

// Path of the fastmig binary used to start sim processes: $FASTMIG_BIN, else
// /proc/self/exe when this process is fastmig, else "fastmig" from PATH.
std::string fastmig_binary();

} // namespace fastmig::sim
