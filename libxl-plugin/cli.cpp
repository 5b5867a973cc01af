#include "libxl-plugin/cli.hpp"

#include <cmath>
#include <cstdio>

namespace fastmig::cli {

Options::Options(const std::vector<std::string>& args, const std::set<std::string>& valued,
                 const std::set<std::string>& flags)
{
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a.rfind("--", 0) != 0 || a == "--") {
            positional_.push_back(a);
            continue;
        }
        std::string name = a.substr(2), value;
        bool has_value = false;
        if (auto eq = name.find('='); eq != std::string::npos) {
            value = name.substr(eq + 1);
            name = name.substr(0, eq);
            has_value = true;
        }
        if (valued.count(name)) {
            if (!has_value) {
                if (i + 1 >= args.size())
                    throw UsageError("option --" + name + " needs a value");
                value = args[++i];
            }
            values_[name] = value;
        } else if (flags.count(name)) {
            if (has_value)
                throw UsageError("option --" + name + " takes no value");
            flags_.insert(name);
        } else {
            throw UsageError("unknown option --" + name);
        }
    }
}

std::optional<std::string> Options::get(const std::string& name) const
{
    auto it = values_.find(name);
    if (it == values_.end())
        return std::nullopt;
    return it->second;
}

std::string Options::get_or(const std::string& name, const std::string& def) const
{
    auto v = get(name);
    return v ? *v : def;
}

std::uint64_t Options::size_or(const std::string& name, std::uint64_t def) const
{
    auto v = get(name);
    return v ? parse_size(*v, "--" + name) : def;
}

std::uint64_t Options::uint_or(const std::string& name, std::uint64_t def) const
{
    auto v = get(name);
    return v ? parse_uint(*v, "--" + name) : def;
}

double Options::double_or(const std::string& name, double def) const
{
    auto v = get(name);
    return v ? parse_double(*v, "--" + name) : def;
}

double parse_double(const std::string& s, const std::string& what)
{
    std::size_t used = 0;
    double d = 0;
    try {
        d = std::stod(s, &used);
    } catch (...) {
        used = 0;
    }
    if (used != s.size() || s.empty() || !std::isfinite(d) || d < 0)
        throw UsageError(what + ": '" + s + "' is not a non-negative number");
    return d;
}

std::uint64_t parse_uint(const std::string& s, const std::string& what)
{
    if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos)
        throw UsageError(what + ": '" + s + "' is not a whole number");
    return std::stoull(s);
}

std::uint64_t parse_size(const std::string& s, const std::string& what)
{
    std::size_t i = 0;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.'))
        ++i;
    std::string num = s.substr(0, i), unit = s.substr(i);
    if (num.empty())
        throw UsageError(what + ": '" + s + "' is not a size (examples: 512M, 8G, 1073741824)");
    double v = parse_double(num, what);
    double mul = 1;
    std::string u;
    for (char c : unit)
        u += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (u == "" || u == "B")
        mul = 1;
    else if (u == "K" || u == "KB" || u == "KIB")
        mul = 1024.0;
    else if (u == "M" || u == "MB" || u == "MIB")
        mul = 1024.0 * 1024;
    else if (u == "G" || u == "GB" || u == "GIB")
        mul = 1024.0 * 1024 * 1024;
    else if (u == "T" || u == "TB" || u == "TIB")
        mul = 1024.0 * 1024 * 1024 * 1024;
    else
        throw UsageError(what + ": unknown unit '" + unit + "' in '" + s + "' (use K, M, G or T)");
    double bytes = v * mul;
    if (bytes >= 1.8e19)
        throw UsageError(what + ": '" + s + "' is too large");
    return static_cast<std::uint64_t>(std::llround(bytes));
}

double parse_rate(const std::string& s, const std::string& what)
{
    std::string l;
    for (char c : s)
        l += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    struct Unit {
        const char* suffix;
        double bits;
    };
    for (Unit u : {Unit{"gbit", 1e9}, Unit{"mbit", 1e6}, Unit{"kbit", 1e3}, Unit{"bit", 1}}) {
        std::size_t n = std::string(u.suffix).size();
        if (l.size() > n && l.compare(l.size() - n, n, u.suffix) == 0) {
            double v = parse_double(l.substr(0, l.size() - n), what);
            if (v <= 0)
                throw UsageError(what + ": rate must be positive");
            return v * u.bits / 8;
        }
    }
    double v = double(parse_size(s, what));
    if (v <= 0)
        throw UsageError(what + ": rate must be positive");
    return v;
}

std::string human_bytes(double b)
{
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", b, units[u]);
    return buf;
}

sim::SimConfig sim_config(const Options& o)
{
    sim::SimConfig cfg;
    cfg.memory_bytes = o.size_or("memory", 1ull << 30);
    cfg.workload = o.get_or("workload", "idle");
    cfg.seed = o.uint_or("seed", 1);
    cfg.rate_scale = o.double_or("rate-scale", 1.0);
    if (cfg.memory_bytes < (1u << 20) || cfg.memory_bytes % kPageSize)
        throw UsageError("--memory must be at least 1M and a multiple of 4K");
    std::string names;
    bool known = false;
    for (auto& w : sim::workload_names()) {
        known |= w.first == cfg.workload;
        names += (names.empty() ? "" : ", ") + w.first;
    }
    if (!known)
        throw UsageError("unknown workload '" + cfg.workload + "' (one of: " + names + ")");
    return cfg;
}

int parse_sim_domain(const std::string& s)
{
    std::string n = s.rfind("sim:", 0) == 0 ? s.substr(4) : s;
    if (n.empty() || n.size() > 9 || n.find_first_not_of("0123456789") != std::string::npos)
        throw UsageError("'" + s + "' is not a sim domain id (expected N or sim:N; see 'fastmig sim list')");
    return std::stoi(n);
}

} // namespace fastmig::cli
