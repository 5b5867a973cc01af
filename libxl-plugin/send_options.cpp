// The precopy and pipeline options, shared by `fastmig send`, `fastmig demo`
// and the libxl-save-helper (FASTMIG_HELPER_OPTIONS), so all three accept
// the same words with the same checks.
#include "libxl-plugin/cli.hpp"

#include "stream/codec/codec.hpp"

#include <algorithm>
#include <thread>

namespace fastmig::cli {

// Options shared by `send` and `demo`: the precopy policy and the pipeline.
const std::set<std::string> kSendValued = {"downtime-ms", "max-rounds",  "batch-pages", "timeout-ms",
                                           "threads",     "channels",    "compress",    "min-ratio",
                                           "xbzrle-cache", "max-bandwidth", "done-timeout-ms"};
const std::set<std::string> kSendFlags = {"always-compress", "no-zero-detect", "no-free-hints"};

unsigned default_threads()
{
    unsigned n = std::thread::hardware_concurrency();
    return n ? std::min(n, 64u) : 2;
}

void apply_send_options(const Options& o, SendOptions& so, unsigned& channels)
{
    so.policy.downtime_target_ms = o.double_or("downtime-ms", 10.0);
    so.policy.max_rounds = static_cast<unsigned>(o.uint_or("max-rounds", 30));
    if (so.policy.max_rounds < 1 || so.policy.max_rounds > 1000)
        throw UsageError("--max-rounds must be 1..1000");
    PipelineConfig& pc = so.pipeline;
    pc.batch_pages = static_cast<std::uint32_t>(o.uint_or("batch-pages", 512));
    if (pc.batch_pages < 1 || pc.batch_pages > wire::kMaxBatchPages)
        throw UsageError("--batch-pages must be 1.." + std::to_string(wire::kMaxBatchPages));
    auto t = o.uint_or("timeout-ms", 30000);
    if (t < 100)
        throw UsageError("--timeout-ms must be at least 100");
    so.io_timeout = std::chrono::milliseconds(t);
    auto dt = o.uint_or("done-timeout-ms", std::max<std::uint64_t>(t, 60000));
    if (dt < 100)
        throw UsageError("--done-timeout-ms must be at least 100");
    so.done_timeout = std::chrono::milliseconds(dt);
    pc.threads = static_cast<unsigned>(o.uint_or("threads", default_threads()));
    if (pc.threads < 1 || pc.threads > 64)
        throw UsageError("--threads must be 1..64");
    channels = static_cast<unsigned>(o.uint_or("channels", 2));
    if (channels < 1 || channels > wire::kMaxChannels)
        throw UsageError("--channels must be 1.." + std::to_string(wire::kMaxChannels));
    try {
        pc.compression.algorithm = codec::parse_algorithm(o.get_or("compress", "igzip"));
    } catch (const Error& e) {
        throw UsageError("--compress: " + e.cause());
    }
    pc.compression.min_ratio = o.double_or("min-ratio", pc.compression.min_ratio);
    if (pc.compression.min_ratio < 1.0)
        throw UsageError("--min-ratio must be at least 1.0");
    pc.compression.always = o.flag("always-compress");
    if (pc.compression.always && pc.compression.algorithm == codec::Algorithm::none)
        throw UsageError("--always-compress needs a codec (--compress igzip or zlib)");
    pc.xbzrle_cache_bytes = o.size_or("xbzrle-cache", 64ull << 20);
    if (pc.xbzrle_cache_bytes && pc.xbzrle_cache_bytes < channels * kPageSize)
        throw UsageError("--xbzrle-cache must be 0 (off) or at least one page per channel");
    pc.zero_detect = !o.flag("no-zero-detect");
    so.free_page_hints = !o.flag("no-free-hints");
    if (auto r = o.get("max-bandwidth"))
        pc.max_bandwidth = parse_rate(*r, "--max-bandwidth");
}

} // namespace fastmig::cli
