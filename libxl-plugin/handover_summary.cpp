#include "libxl-plugin/helper.hpp"

#include <cstdio>

namespace fastmig::helper {

std::string saved_summary(const std::string& who, const SendResult& r)
{
    char line[320];
    std::snprintf(line, sizeof line,
                  "saved %s: %llu pages in %u rounds (%s), %.1f MiB written in %.0f ms, stop-and-copy %.1f ms",
                  who.c_str(), (unsigned long long)r.nr_pages, r.rounds, stop_reason_name(r.stop_reason),
                  double(r.bytes_sent) / (1 << 20), r.total_ms, r.stop_copy_ms);
    return line;
}

std::string restored_summary(const std::string& who, const ReceiveResult& r)
{
    char line[320];
    std::snprintf(line, sizeof line, "restored %s from %s: %llu pages, %.1f MiB read in %.0f ms (%u rounds)",
                  who.c_str(), r.source_name.c_str(), (unsigned long long)r.nr_pages,
                  double(r.bytes_received) / (1 << 20), r.receive_ms + r.restore_ms, r.rounds);
    return line;
}

} // namespace fastmig::helper
