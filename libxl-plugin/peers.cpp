#include "libxl-plugin/peers.hpp"

#include "stream/types.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <unistd.h>

namespace fastmig::interop {

namespace {

std::string lower(std::string s)
{
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return s;
}

std::optional<PeerFormat> format_word(const std::string& w)
{
    if (w == "fastmig")
        return PeerFormat::fastmig;
    if (w == "stock")
        return PeerFormat::stock;
    return std::nullopt;
}

// A host name (RFC 1123 letters, digits, '-', '.'), an IPv4 address, or an
// IPv6 one (hex digits and ':', optionally in brackets); '_' is tolerated
// as some local names have it.
bool valid_name(const std::string& s)
{
    if (s.empty() || s.size() > 253)
        return false;
    return std::all_of(s.begin(), s.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == ':' || c == '[' || c == ']';
    });
}

std::string strip_user(const std::string& host)
{
    auto at = host.rfind('@');
    return at == std::string::npos ? host : host.substr(at + 1);
}

} // namespace

const char* peer_format_name(PeerFormat f)
{
    return f == PeerFormat::stock ? "stock" : "fastmig";
}

PeerTable PeerTable::parse(std::istream& in, const std::string& name)
{
    PeerTable t;
    t.name_ = name;
    t.present_ = true;
    std::string raw;
    unsigned no = 0;
    auto fail = [&](const std::string& cause) -> Error { return Error(name + ":" + std::to_string(no) + ": " + cause); };
    while (std::getline(in, raw)) {
        ++no;
        if (no > 100000)
            throw fail("more than 100000 lines: not a peers table");
        if (raw.size() > 1024)
            throw fail("line longer than 1024 characters");
        if (auto hash = raw.find('#'); hash != std::string::npos)
            raw.erase(hash);
        std::istringstream words(raw);
        std::vector<std::string> w;
        for (std::string x; words >> x;)
            w.push_back(x);
        if (w.empty())
            continue;
        if (w.size() != 2)
            throw fail("expected 'DESTINATION fastmig|stock', got " + std::to_string(w.size()) + " word" +
                       (w.size() == 1 ? "" : "s"));
        auto f = format_word(w[1]);
        if (!f)
            throw fail("unknown format '" + w[1] + "' (fastmig or stock)");
        PeerEntry e{lower(strip_user(w[0])), *f, no};
        if (e.name == "default") {
            if (t.default_)
                throw fail("a second 'default' (the first is on line " + std::to_string(t.default_->line) + ")");
            t.default_ = e;
            continue;
        }
        if (!valid_name(e.name))
            throw fail("'" + w[0] + "' is not a host name or address");
        for (const auto& o : t.entries_)
            if (o.name == e.name)
                throw fail("'" + e.name + "' is already on line " + std::to_string(o.line));
        t.entries_.push_back(e);
    }
    if (in.bad())
        throw Error(name + ": read error");
    return t;
}

PeerTable PeerTable::load(const std::string& path)
{
    std::ifstream in(path);
    if (!in) {
        // Absent is normal (nothing configured: every destination gets
        // fastmig's stream); present but unreadable is an error.
        if (::access(path.c_str(), F_OK) != 0 && errno == ENOENT) {
            PeerTable t;
            t.name_ = path;
            return t;
        }
        throw Error(path + ": cannot be read: " + std::strerror(errno));
    }
    return parse(in, path);
}

PeerChoice PeerTable::choose(const std::string& destination) const
{
    if (!destination.empty()) {
        std::string d = lower(strip_user(destination));
        for (const auto& e : entries_)
            if (e.name == d)
                return {e.format, name_ + ":" + std::to_string(e.line)};
    }
    const std::string dest = destination.empty() ? "destination unknown" : "'" + destination + "' not listed";
    if (default_)
        return {default_->format, dest + ", default of " + name_ + ":" + std::to_string(default_->line)};
    return {PeerFormat::fastmig, dest + ", no default in " + name_ + (present_ ? "" : " (no such file)")};
}

std::string peers_path()
{
    const char* env = std::getenv("FASTMIG_PEERS");
    return env && *env ? env : kDefaultPeersPath;
}

std::optional<PeerFormat> peer_override()
{
    const char* env = std::getenv("FASTMIG_PEER");
    if (!env || !*env)
        return std::nullopt;
    auto f = format_word(env);
    if (!f)
        throw Error(std::string("FASTMIG_PEER='") + env + "' is neither fastmig nor stock");
    return f;
}

std::string peers_report()
{
    const std::string path = peers_path();
    std::string r = "stream per destination (saves and xl migrate; see README.md, \"Rolling upgrade\"):\n";
    try {
        auto t = PeerTable::load(path);
        if (!t.present()) {
            r += "  " + path + ": not present: every destination gets fastmig's stream\n";
        } else {
            r += "  " + path + ":\n";
            for (const auto& e : t.entries())
                r += "    " + e.name + std::string(e.name.size() < 24 ? 24 - e.name.size() : 1, ' ') +
                     peer_format_name(e.format) + " (line " + std::to_string(e.line) + ")\n";
            const auto& d = t.default_entry();
            r += std::string("    default                 ") + (d ? peer_format_name(d->format) : "fastmig") +
                 (d ? " (line " + std::to_string(d->line) + ")" : std::string(" (not set in the file)")) + "\n";
        }
    } catch (const Error& e) {
        r += "  ERROR: " + std::string(e.what()) + " (every save fails until it is fixed)\n";
    }
    try {
        auto o = peer_override();
        r += o ? std::string("  FASTMIG_PEER=") + peer_format_name(*o) + " here: it overrides the table\n"
               : std::string("  FASTMIG_PEER: not set here (set it for one command: FASTMIG_PEER=stock xl migrate ...)\n");
    } catch (const Error& e) {
        r += "  ERROR: " + std::string(e.what()) + "\n";
    }
    return r;
}

std::optional<std::string> xl_migrate_destination(const std::vector<std::string>& cmd)
{
    std::size_t i = 1;
    while (i < cmd.size() && cmd[i].size() > 1 && cmd[i][0] == '-') // xl's own options take no value
        ++i;
    if (i >= cmd.size() || cmd[i] != "migrate")
        return std::nullopt;
    std::vector<std::string> pos;
    bool empty_ssh = false;
    for (++i; i < cmd.size(); ++i) {
        const std::string& a = cmd[i];
        if (a == "--") {
            pos.insert(pos.end(), cmd.begin() + std::ptrdiff_t(i) + 1, cmd.end());
            break;
        }
        if (a == "-C" || a == "-s") { // the options of xl migrate that take a value
            if (a == "-s" && i + 1 < cmd.size() && cmd[i + 1].empty())
                empty_ssh = true;
            ++i;
        } else if (a.size() > 1 && a[0] == '-') {
            // -e, -F, -p, -T, --debug, --live; or -Cfile / -sssh glued
        } else {
            pos.push_back(a);
        }
    }
    if (pos.size() != 2 || empty_ssh)
        return std::nullopt;
    std::string host = strip_user(pos[1]);
    if (!valid_name(host))
        return std::nullopt;
    return host;
}

} // namespace fastmig::interop
