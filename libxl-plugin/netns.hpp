// Entering a network namespace made with `ip netns add NAME`, for tests and
// benchmarks that put the sender and the receiver on two emulated hosts.
#pragma once

#include <string>

namespace fastmig::cli {

// Moves the calling thread (call it before starting any thread) into
// /var/run/netns/NAME.  Throws Error naming the namespace on failure.
void enter_netns(const std::string& name);

} // namespace fastmig::cli
