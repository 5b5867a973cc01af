// A main() for the fuzz targets when libFuzzer is not there (g++ builds,
// `make check` without clang): feeds LLVMFuzzerTestOneInput every file
// given (directories: every file in them, sorted), then a bounded number of
// deterministic mutations of each (the same every run: a failure is
// reproducible from the file and the mutation number it prints).  A crash,
// an abort from a broken invariant or a sanitizer report ends the process
// abnormally; the caller treats any exit status but 0 as a failure.
//
// Usage: fuzz-X-replay [--mutations N] [--max-len BYTES] PATH...
#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) __attribute__((weak));

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

namespace {

// xorshift64*: small, deterministic, good enough to pick edits.
struct Rng {
    std::uint64_t s;
    std::uint64_t operator()()
    {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 0x2545f4914f6cdd1dull;
    }
};

// libFuzzer-like edits: bit flips, byte sets, interesting 32-bit values
// (lengths, counts), inserted/erased/duplicated chunks, truncation.
void mutate(Bytes& m, Rng& rng, std::size_t max_len)
{
    static const std::uint32_t interesting[] = {0, 1, 7, 8, 15, 16, 255, 256, 4095, 4096, 4097, 4160, 4161,
                                                65535, 65536, 66560, 0x7fffffff, 0x80000000u, 0xffffffffu};
    const unsigned edits = 1 + rng() % 4;
    for (unsigned e = 0; e < edits; ++e) {
        if (m.empty())
            m.push_back(0);
        const std::size_t at = rng() % m.size();
        switch (rng() % 8) {
        case 0: m[at] ^= static_cast<std::uint8_t>(1u << (rng() % 8)); break;
        case 1: m[at] = static_cast<std::uint8_t>(rng()); break;
        case 2:
            if (at + 4 <= m.size()) {
                std::uint32_t v = interesting[rng() % (sizeof interesting / sizeof interesting[0])];
                std::memcpy(&m[at], &v, 4);
            }
            break;
        case 3: m.resize(at + 1); break;
        case 4: m.insert(m.begin() + static_cast<std::ptrdiff_t>(at), static_cast<std::uint8_t>(rng())); break;
        case 5: m.erase(m.begin() + static_cast<std::ptrdiff_t>(at)); break;
        case 6: { // duplicate a chunk (repeats records)
            const std::size_t len = std::min<std::size_t>(1 + rng() % 64, m.size() - at);
            Bytes chunk(m.begin() + static_cast<std::ptrdiff_t>(at), m.begin() + static_cast<std::ptrdiff_t>(at + len));
            const std::size_t to = rng() % m.size();
            m.insert(m.begin() + static_cast<std::ptrdiff_t>(to), chunk.begin(), chunk.end());
            break;
        }
        default: m[0] = static_cast<std::uint8_t>(rng()); break; // the targets' flags byte
        }
    }
    if (m.size() > max_len)
        m.resize(max_len);
}

// What is running, for the crash handler: "FILE mutation N".
char current[4096];

void on_crash(int sig)
{
    const char head[] = "\nfuzz replay: crashed on ";
    (void)!::write(2, head, sizeof head - 1);
    (void)!::write(2, current, std::strlen(current));
    (void)!::write(2, "\n", 1);
    std::signal(sig, SIG_DFL);
    std::raise(sig);
}

Bytes slurp(const fs::path& p)
{
    std::ifstream f(p, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(f), {});
}

} // namespace

int main(int argc, char** argv)
{
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    unsigned long mutations = 0;
    std::size_t max_len = 1 << 20;
    std::vector<fs::path> files;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--mutations" && i + 1 < argc) {
            mutations = std::strtoul(argv[++i], nullptr, 10);
        } else if (a == "--max-len" && i + 1 < argc) {
            max_len = std::strtoul(argv[++i], nullptr, 10);
        } else if (fs::is_directory(a)) {
            std::vector<fs::path> in;
            for (const auto& e : fs::directory_iterator(a))
                if (e.is_regular_file())
                    in.push_back(e.path());
            std::sort(in.begin(), in.end());
            files.insert(files.end(), in.begin(), in.end());
        } else if (fs::is_regular_file(a)) {
            files.push_back(a);
        } else {
            std::fprintf(stderr, "%s: no such file or directory: %s\n", argv[0], a.c_str());
            return 2;
        }
    }
    if (files.empty()) {
        std::fprintf(stderr, "%s: no inputs\n", argv[0]);
        return 2;
    }
    for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL})
        std::signal(sig, on_crash);
    unsigned long runs = 0;
    for (const auto& f : files) {
        const Bytes base = slurp(f);
        std::snprintf(current, sizeof current, "%s (as is)", f.c_str());
        LLVMFuzzerTestOneInput(base.data(), base.size());
        ++runs;
        Rng rng{0x5eed2026ull ^ std::hash<std::string>{}(f.filename().string())};
        for (unsigned long k = 0; k < mutations; ++k) {
            Bytes m = base;
            mutate(m, rng, max_len);
            std::snprintf(current, sizeof current, "%s mutation %lu", f.c_str(), k);
            LLVMFuzzerTestOneInput(m.data(), m.size());
            ++runs;
        }
    }
    std::printf("replayed %zu inputs, %lu executions, no crash\n", files.size(), runs);
    return 0;
}
