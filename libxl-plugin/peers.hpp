// Which stream a save writes, per destination, for pools where some hosts
// run fastmig and some do not yet (README.md, "Rolling upgrade").  The
// source cannot ask: libxl's helper has no channel back from the
// destination, so the answer is configured here.
//
// The file (/etc/fastmig/peers, or $FASTMIG_PEERS):
//
//   # comment (from '#' to the end of the line); blank lines are ignored
//   default  fastmig        # destinations not listed (fastmig when absent)
//   host2    stock          # a host name or address as given to xl migrate
//   10.0.0.7 stock
//
// One entry a line, two words: a destination and `fastmig` or `stock`.
// Names compare without case; a `user@` prefix of the destination is
// ignored.  Anything else is an error naming the file and line: a wrong
// table must not silently send the wrong format.
//
// FASTMIG_PEER=fastmig|stock, in the environment of one command (xl
// migrate), overrides the table.
#pragma once

#include <istream>
#include <optional>
#include <string>
#include <vector>

namespace fastmig::interop {

enum class PeerFormat { fastmig, stock };
const char* peer_format_name(PeerFormat f);

constexpr const char* kDefaultPeersPath = "/etc/fastmig/peers";

struct PeerEntry {
    std::string name; // lower case
    PeerFormat format = PeerFormat::fastmig;
    unsigned line = 0;
};

struct PeerChoice {
    PeerFormat format = PeerFormat::fastmig;
    std::string why; // "FASTMIG_PEER=stock", "/etc/fastmig/peers:3", "default of ...", "no ..."
};

class PeerTable {
public:
    // Throws fastmig::Error "NAME:LINE: cause".
    static PeerTable parse(std::istream& in, const std::string& name);
    // The file at `path`; a missing file is an empty table (everything
    // fastmig).  Throws for an unreadable or malformed one.
    static PeerTable load(const std::string& path);

    // The format for `destination` (empty: unknown destination).
    PeerChoice choose(const std::string& destination) const;

    const std::string& name() const { return name_; }
    bool present() const { return present_; }
    const std::vector<PeerEntry>& entries() const { return entries_; }
    const std::optional<PeerEntry>& default_entry() const { return default_; }

private:
    std::string name_;
    bool present_ = false;
    std::vector<PeerEntry> entries_;
    std::optional<PeerEntry> default_;
};

// $FASTMIG_PEERS, else kDefaultPeersPath.
std::string peers_path();

// FASTMIG_PEER, if set: throws fastmig::Error for a value that is neither.
std::optional<PeerFormat> peer_override();

// For `fastmig status`: the table in effect (file, entries, default,
// FASTMIG_PEER), or its error; lines end with '\n'.
std::string peers_report();

// The destination host of `xl [options] migrate [options] DOMAIN HOST`
// (the command line of the process libxl runs in), without a `user@`
// prefix; nullopt for any other command line (xl save, a toolstack that is
// not xl) or `-s ''`, where HOST is a whole command, not a host.
std::optional<std::string> xl_migrate_destination(const std::vector<std::string>& cmdline);

} // namespace fastmig::interop
