// Throughput of record-tag and cipher candidates over 2 MiB of page data
// (one full PAGE_BATCH of 512 pages), one core: how docs/stream-format.md
// (Cost) chose UMAC-128, and what fastmig's own sealing and opening of an
// encrypted record cost (Encryption).  `make bench-auth`, also run by
// `make bench-crypto`; not part of `make check`.  Numbers on a shared
// machine are noisy: run it a few times.
#include "stream/auth/auth.hpp"
#include "stream/wire.hpp"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include <nettle/chacha-poly1305.h>
#include <nettle/gcm.h>
#include <nettle/hmac.h>
#include <nettle/poly1305.h>
#include <nettle/umac.h>

using namespace fastmig;

namespace {

constexpr std::size_t kPages = 512;
constexpr std::size_t kBytes = kPages * kPageSize;

double rate(const std::function<void()>& f)
{
    using clk = std::chrono::steady_clock;
    f(); // warm up
    double best = 0;
    for (int rep = 0; rep < 3; ++rep) { // best of three 0.3 s runs: the machine is shared
        int n = 0;
        auto t0 = clk::now();
        double s;
        do {
            f();
            ++n;
            s = std::chrono::duration<double>(clk::now() - t0).count();
        } while (s < 0.3);
        best = std::max(best, double(kBytes) * n / s / 1e9);
    }
    return best;
}

} // namespace

int main()
{
    std::vector<std::uint8_t> pages(kBytes), out(kBytes);
    for (std::size_t i = 0; i < kBytes; ++i)
        pages[i] = static_cast<std::uint8_t>(i * 131 + (i >> 12));
    std::uint8_t key[32], nonce[16] = {}, tag[32];
    std::memset(key, 0x42, sizeof key);
    // The pages as the writer sees them: one iovec per page.
    std::vector<iovec> iov;
    for (std::size_t p = 0; p < kPages; ++p)
        iov.push_back({pages.data() + p * kPageSize, kPageSize});

    struct Row {
        const char* name;
        std::function<void()> f;
    };
    auth::RecordMac mac(std::span<const std::uint8_t>(key, auth::kRecordKeySize));
    umac128_ctx u;
    umac128_set_key(&u, key);
    hmac_sha256_ctx h;
    hmac_sha256_set_key(&h, 32, key);
    poly1305_aes_ctx pa;
    poly1305_aes_set_key(&pa, key);
    gcm_aes256_ctx g;
    gcm_aes256_set_key(&g, key);
    chacha_poly1305_ctx cp;
    chacha_poly1305_set_key(&cp, key);
    // A whole PAGE_BATCH as the writer hands it over: header and descriptors,
    // then one iovec per page.
    std::vector<std::uint8_t> head(16 + 8 * kPages, 0);
    const std::uint32_t body = static_cast<std::uint32_t>(head.size() - 16 + kBytes);
    std::memcpy(head.data() + 4, &body, 4);
    std::vector<iovec> rec{{head.data(), head.size()}};
    rec.insert(rec.end(), iov.begin(), iov.end());
    auth::AeadSealer seal_gcm(auth::Suite::aes256_gcm, std::span<const std::uint8_t>(key, 32));
    auth::AeadSealer seal_chacha(auth::Suite::chacha20_poly1305, std::span<const std::uint8_t>(key, 32));
    std::vector<iovec> sealed;
    auto seal = [&](auth::AeadSealer& s) {
        sealed.clear();
        s.seal(rec, sealed);
    };
    // Opening: decrypt in place and check (the tag fails here, after the
    // same work: the opener always decrypts the whole record first).
    auth::RecordOpener open_gcm(auth::Suite::aes256_gcm, std::span<const std::uint8_t>(key, 32));
    auth::RecordOpener open_chacha(auth::Suite::chacha20_poly1305, std::span<const std::uint8_t>(key, 32));
    auto open = [&](auth::RecordOpener& o) {
        try {
            o.verify("bench", {head.data(), 16}, out, {tag, 16});
        } catch (const AuthError&) {
        }
    };
    Row rows[] = {
        {"fastmig seal AES-256-GCM (512 iovecs)", [&] { seal(seal_gcm); }},
        {"fastmig seal ChaCha20-Poly1305", [&] { seal(seal_chacha); }},
        {"fastmig open AES-256-GCM (in place)", [&] { open(open_gcm); }},
        {"fastmig open ChaCha20-Poly1305", [&] { open(open_chacha); }},
        {"fastmig tag (UMAC-128, 512 iovecs)", [&] { mac.next_tag(iov); }},
        {"nettle UMAC-128", [&] {
             umac128_set_nonce(&u, 8, nonce);
             umac128_update(&u, kBytes, pages.data());
             umac128_digest(&u, 16, tag);
         }},
        {"nettle HMAC-SHA256", [&] {
             hmac_sha256_update(&h, kBytes, pages.data());
             hmac_sha256_digest(&h, 32, tag);
         }},
        {"nettle Poly1305-AES", [&] {
             poly1305_aes_set_nonce(&pa, nonce);
             poly1305_aes_update(&pa, kBytes, pages.data());
             poly1305_aes_digest(&pa, 16, tag);
         }},
        {"nettle GMAC (AES-256-GCM, AAD only)", [&] {
             gcm_aes256_set_iv(&g, 12, nonce);
             gcm_aes256_update(&g, kBytes, pages.data());
             gcm_aes256_digest(&g, 16, tag);
         }},
        {"nettle AES-256-GCM encrypt", [&] {
             gcm_aes256_set_iv(&g, 12, nonce);
             gcm_aes256_encrypt(&g, kBytes, out.data(), pages.data());
             gcm_aes256_digest(&g, 16, tag);
         }},
        {"nettle ChaCha20-Poly1305 encrypt", [&] {
             chacha_poly1305_set_nonce(&cp, nonce);
             chacha_poly1305_encrypt(&cp, kBytes, out.data(), pages.data());
             chacha_poly1305_digest(&cp, 16, tag);
         }},
        {"CRC-32C (ISA-L, every record has it)", [&] { (void)wire::crc32c(pages); }},
        {"memcpy (reference)", [&] { std::memcpy(out.data(), pages.data(), kBytes); }},
    };
    std::printf("%-40s %8s\n", "over 2 MiB of page data, one core", "GB/s");
    for (auto& r : rows)
        std::printf("%-40s %8.2f\n", r.name, rate(r.f));
    return 0;
}
