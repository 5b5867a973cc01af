#include "libxl-plugin/report.hpp"

#include "libxl-plugin/cli.hpp"

#include <cmath>
#include <cstdio>

namespace fastmig::cli {

std::string json_escape(const std::string& s)
{
    std::string o = "\"";
    for (unsigned char c : s) {
        switch (c) {
        case '"': o += "\\\""; break;
        case '\\': o += "\\\\"; break;
        case '\n': o += "\\n"; break;
        case '\t': o += "\\t"; break;
        default:
            if (c < 0x20) {
                char b[8];
                std::snprintf(b, sizeof b, "\\u%04x", c);
                o += b;
            } else {
                o += static_cast<char>(c);
            }
        }
    }
    return o + "\"";
}

Json& Json::add_raw(const std::string& k, const std::string& json)
{
    if (!body_.empty())
        body_ += ",";
    body_ += json_escape(k) + ":" + json;
    return *this;
}

Json& Json::add(const std::string& k, const std::string& v) { return add_raw(k, json_escape(v)); }

Json& Json::add(const std::string& k, double v)
{
    if (!std::isfinite(v))
        return add_raw(k, "null");
    char b[64];
    std::snprintf(b, sizeof b, "%.3f", v);
    return add_raw(k, b);
}

Json& Json::add(const std::string& k, std::uint64_t v) { return add_raw(k, std::to_string(v)); }

std::string report_json(const MigrationReport& r)
{
    const SendResult& s = r.send;
    Json j;
    j.add("workload", r.workload)
        .add("memory_bytes", r.memory_bytes)
        .add("source", s.domain)
        .add("destination", r.destination)
        .add("total_ms", s.total_ms);
    if (r.downtime_ms >= 0)
        j.add("downtime_ms", r.downtime_ms);
    else
        j.add_raw("downtime_ms", "null");
    j.add("source_downtime_ms", s.source_downtime_ms)
        .add("precopy_ms", s.precopy_ms)
        .add("stop_copy_ms", s.stop_copy_ms)
        .add("negotiate_ms", s.negotiate_ms)
        .add("setup_ms", s.setup_ms)
        .add("ready_wait_ms", s.ready_wait_ms)
        .add("commit_ms", s.commit_ms)
        .add("release_ms", s.release_ms)
        .add("bytes_sent", s.bytes_sent)
        .add("pages_total", s.nr_pages)
        .add("pages_zero", s.pages_zero)
        .add("pages_free", s.pages_free)
        .add("pages_sent", s.pages_data)
        .add("rounds", s.rounds)
        .add("stop_reason", stop_reason_name(s.stop_reason))
        .add("stop_why", s.stop_why);
    if (s.verified)
        j.add("verified", *s.verified);
    else
        j.add_raw("verified", "null");
    // DONE was lost and an outcome query said where the domain runs.
    if (!s.resolved.empty())
        j.add("resolved", s.resolved);
    j.add("sender_rss_kib", std::uint64_t(r.sender_rss_kib)).add("receiver_rss_kib", std::uint64_t(r.receiver_rss_kib));
    j.add("cpu_ms", r.sender_cpu_ms).add("receiver_cpu_ms", r.receiver_cpu_ms);
    j.add("threads", s.threads).add("channels", s.channels).add("compress", r.compress);
    j.add("pages_deflate", s.pages_deflate).add("pages_xbzrle", s.pages_xbzrle);
    if (s.deflate_out)
        j.add("compress_ratio", double(s.deflate_in) / double(s.deflate_out));
    else
        j.add_raw("compress_ratio", "null");
    j.add("xbzrle_hits", s.xbzrle_hits).add("xbzrle_misses", s.xbzrle_misses);
    std::string rounds = "[";
    for (std::size_t i = 0; i < s.round_stats.size(); ++i) {
        const auto& rs = s.round_stats[i];
        Json rj;
        rj.add("round", rs.round)
            .add("stop_copy", rs.stop_copy)
            .add("pages", rs.pages)
            .add("zero_pages", rs.zero_pages)
            .add("free_pages", rs.free_pages)
            .add("deflate_pages", rs.deflate_pages)
            .add("xbzrle_pages", rs.xbzrle_pages)
            .add("bytes", rs.bytes)
            .add("ms", rs.seconds * 1e3)
            .add("dirty_after", rs.dirty_after)
            .add("predicted_downtime_ms", rs.predicted_downtime_ms);
        if (const auto& c = rs.compression) {
            // Which way the compression policy went at the round's end, and why.
            Json cj;
            cj.add("compressing", c->compress())
                .add("link_bytes_per_s", c->link_rate)
                .add("compress_bytes_per_s", c->compress_rate)
                .add("compress_rate_measured", c->compress_rate_measured);
            if (std::isfinite(c->ratio_needed))
                cj.add("ratio_needed", c->ratio_needed);
            else
                cj.add_raw("ratio_needed", "null");
            if (c->destination_bound >= 0)
                cj.add("destination_bound", c->destination_bound);
            else
                cj.add_raw("destination_bound", "null");
            if (c->link_busy >= 0)
                cj.add("link_busy", c->link_busy);
            else
                cj.add_raw("link_busy", "null");
            cj.add("why", c->why());
            rj.add_raw("compression", cj.str());
        }
        rounds += (i ? "," : "") + rj.str();
    }
    rounds += "]";
    j.add_raw("round_stats", rounds);
    return j.str();
}

std::string report_table(const MigrationReport& r)
{
    const SendResult& s = r.send;
    std::string out;
    char b[256];
    auto line = [&](const char* k, const std::string& v) {
        std::snprintf(b, sizeof b, "  %-22s %s\n", k, v.c_str());
        out += b;
    };
    auto num = [&](const char* fmt, double v) {
        std::snprintf(b, sizeof b, fmt, v);
        return std::string(b);
    };
    out += "migration of " + s.domain + (r.destination.empty() ? "" : " -> " + r.destination) + "\n";
    if (!r.workload.empty())
        line("workload", r.workload + ", " + human_bytes(double(r.memory_bytes)));
    line("total", num("%.1f ms", s.total_ms));
    line("downtime", r.downtime_ms >= 0 ? num("%.2f ms", r.downtime_ms)
                                        : num("<= %.2f ms (source view)", s.source_downtime_ms));
    line("precopy / stop-copy", num("%.1f ms", s.precopy_ms) + " / " + num("%.2f ms", s.stop_copy_ms));
    line("sent", human_bytes(double(s.bytes_sent)) + num(" (%.1f%% of memory)", 100.0 * double(s.bytes_sent) / double(std::max<std::uint64_t>(1, s.nr_pages * kPageSize))));
    line("pages", std::to_string(s.nr_pages) + " total, " + std::to_string(s.pages_free) + " free (not read), " +
                      std::to_string(s.pages_zero) + " zero, " + std::to_string(s.pages_data) + " with data");
    line("rounds", std::to_string(s.rounds) + " (" + stop_reason_name(s.stop_reason) + ": " + s.stop_why + ")");
    line("pipeline", std::to_string(s.threads) + " threads, " + std::to_string(s.channels) + " channels, " +
                         (r.compress.empty() ? std::string("-") : r.compress) +
                         (s.deflate_out ? num(" (%.2f:1 on ", double(s.deflate_in) / double(s.deflate_out)) +
                                              std::to_string(s.pages_deflate) + " pages)"
                                        : std::string()) +
                         ", xbzrle " + std::to_string(s.pages_xbzrle) + " pages");
    if (r.sender_cpu_ms > 0)
        line("CPU sender / receiver", num("%.0f ms", r.sender_cpu_ms) + " / " + num("%.0f ms", r.receiver_cpu_ms));
    line("verified", s.verified ? (*s.verified ? "yes, every page matches" : "NO: memory differs") : "not checked");
    if (r.sender_rss_kib || r.receiver_rss_kib)
        line("RSS sender / receiver", num("%.1f MiB", r.sender_rss_kib / 1024.0) + " / " +
                                          num("%.1f MiB", r.receiver_rss_kib / 1024.0));
    out += "  round   pages      zero       MiB       ms   dirty-after  predicted-ms\n";
    for (const auto& rs : s.round_stats) {
        std::snprintf(b, sizeof b, "  %3u%s %9llu %9llu %9.1f %8.1f %12llu %12.2f\n", rs.round, rs.stop_copy ? "*" : " ",
                      (unsigned long long)rs.pages, (unsigned long long)rs.zero_pages, double(rs.bytes) / (1 << 20),
                      rs.seconds * 1e3, (unsigned long long)rs.dirty_after, rs.predicted_downtime_ms);
        out += b;
    }
    out += "  (* = stop-and-copy, guest paused)\n";
    return out;
}

} // namespace fastmig::cli
