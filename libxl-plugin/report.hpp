// What the commands print: a JSON object (one line, last line of output with
// --json) and a human table.  Kept apart from the engine so the engine never
// formats for a terminal.
#pragma once

#include "stream/receiver.hpp"
#include "stream/sender.hpp"

#include <cstdint>
#include <string>

namespace fastmig::cli {

// A tiny JSON object builder: enough for flat objects and arrays of them.
class Json {
public:
    Json& add(const std::string& k, const std::string& v);
    Json& add(const std::string& k, const char* v) { return add(k, std::string(v)); }
    Json& add(const std::string& k, double v);
    Json& add(const std::string& k, std::uint64_t v);
    Json& add(const std::string& k, unsigned v) { return add(k, std::uint64_t(v)); }
    Json& add(const std::string& k, int v) { return add_raw(k, std::to_string(v)); }
    Json& add(const std::string& k, bool v) { return add_raw(k, v ? "true" : "false"); }
    Json& add_raw(const std::string& k, const std::string& json);
    std::string str() const { return "{" + body_ + "}"; }

private:
    std::string body_;
};
std::string json_escape(const std::string& s);

struct MigrationReport {
    std::string workload;
    std::uint64_t memory_bytes = 0;
    SendResult send;
    double downtime_ms = -1;       // < 0: unknown (two hosts)
    long sender_rss_kib = 0;
    long receiver_rss_kib = 0;
    double sender_cpu_ms = 0;
    double receiver_cpu_ms = 0;
    std::string compress;          // algorithm name
    std::string destination;       // destination domain name, if known
};

std::string report_json(const MigrationReport& r);
std::string report_table(const MigrationReport& r);

} // namespace fastmig::cli
