// Small helpers shared by the fastmig subcommands: option parsing with clear
// errors, sizes ("8G"), and the one-line error convention.
#pragma once

#include "stream/domain/sim/sim.hpp"
#include "stream/sender.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastmig::cli {

// Raised for bad command-line input; main() prints "fastmig: <msg>" and
// exits with status 2 (status 1 is for failures at run time).
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Parses "--name value", "--name=value" and bare flags.  Only names listed in
// `valued` or `flags` are accepted; anything else is a UsageError.
class Options {
public:
    Options(const std::vector<std::string>& args, const std::set<std::string>& valued,
            const std::set<std::string>& flags);

    bool flag(const std::string& name) const { return flags_.count(name) > 0; }
    std::optional<std::string> get(const std::string& name) const;
    std::string get_or(const std::string& name, const std::string& def) const;
    std::uint64_t size_or(const std::string& name, std::uint64_t def) const;    // "1G", "512M", bytes
    std::uint64_t uint_or(const std::string& name, std::uint64_t def) const;
    double double_or(const std::string& name, double def) const;
    const std::vector<std::string>& positional() const { return positional_; }

private:
    std::map<std::string, std::string> values_;
    std::set<std::string> flags_;
    std::vector<std::string> positional_;
};

// "8G", "8GiB", "512M", "4096" (bytes), "1.5G".  Binary units.
std::uint64_t parse_size(const std::string& s, const std::string& what);
std::uint64_t parse_uint(const std::string& s, const std::string& what);
// A link rate in bytes/s: "10gbit", "500mbit", "64kbit" (bits/s, decimal as
// network people write them) or a size per second "125M" (bytes/s, binary).
double parse_rate(const std::string& s, const std::string& what);
double parse_double(const std::string& s, const std::string& what);
std::string human_bytes(double bytes);

// --memory, --workload, --seed, --rate-scale of a sim guest (demo and sim
// create), validated; UsageError names the bad option.
sim::SimConfig sim_config(const Options& o);

// "3" or "sim:3" -> 3; anything else is a UsageError.
int parse_sim_domain(const std::string& s);

// Options of the precopy policy and the pipeline (see `fastmig help`):
// the names Options must accept, and their application to SendOptions.
extern const std::set<std::string> kSendValued;
extern const std::set<std::string> kSendFlags;
unsigned default_threads();
void apply_send_options(const Options& o, SendOptions& so, unsigned& channels);

int cmd_demo(const std::vector<std::string>& args);
int cmd_send(const std::vector<std::string>& args);
int cmd_receive(const std::vector<std::string>& args);
int cmd_keygen(const std::vector<std::string>& args);
int cmd_resolve(const std::vector<std::string>& args);
int cmd_sim(const std::vector<std::string>& args, int argc, char** argv);
int cmd_status(const std::vector<std::string>& args);

} // namespace fastmig::cli
