#include "stream/domain/sim/sim_content.hpp"

#include <array>
#include <cstring>
#include <string_view>

namespace fastmig::sim {

namespace {

// The vocabulary: frequent English words first (picked more often, like a
// real text's Zipf distribution), then web-ish words and markup.
constexpr std::string_view kWords[] = {
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had",
    "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there", "been", "if",
    "more", "when", "will", "would", "who", "so", "no", "out", "up", "into", "than", "them", "only",
    "time", "some", "could", "new", "about", "two", "may", "first", "then", "do", "any", "like",
    "other", "very", "after", "also", "made", "many", "should", "people", "such", "these", "over",
    "years", "where", "most", "between", "world", "under", "system", "memory", "page", "server",
    "request", "response", "content", "domain", "network", "migration", "performance", "session",
    "user", "account", "product", "price", "order", "search", "results", "contact", "privacy",
    "policy", "terms", "service", "download", "support", "documentation", "version", "release",
    "update", "security", "customer", "shipping", "review", "rating", "article", "comment", "share",
    "<div class=\"content\">", "</div>", "<p>", "</p>", "<li>", "</li>", "<ul>", "</ul>",
    "<span class=\"label\">", "</span>", "<a href=\"/products/", "\">", "</a>", "<h2>", "</h2>",
    "<td>", "</td>", "<tr>", "</tr>", "&nbsp;", "<br/>", "<img src=\"/static/img/", ".png\" alt=\"",
    "<script src=\"/js/app.js\"></script>", "<meta name=\"description\" content=\"",
    "style=\"display:none\"", "data-id=\"", "2026-11-21", "GET", "POST", "HTTP/1.1", "200", "404",
    "Mozilla/5.0", "(X11; Linux x86_64)", "text/html; charset=utf-8", "Content-Length:",
    "Cache-Control: max-age=3600", "index.html", "api/v2/items", "login", "logout", "cart",
    "checkout", "Lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit",
};
constexpr std::size_t kNrWords = sizeof kWords / sizeof kWords[0];

// Word picker: three draws in four from the 24 most frequent words, the rest
// from the whole vocabulary (tuned for deflate ~3:1 on a single 4 KiB page).
inline std::string_view pick_word(std::uint64_t r)
{
    if (r & 3)
        return kWords[(r >> 2) % 24];
    return kWords[(r >> 2) % kNrWords];
}

// Markup around each line of words: real web content and logs repeat long
// fragments, which is what makes them compress (a single word repeated is
// barely cheaper for deflate than its letters).
constexpr std::string_view kLines[][2] = {
    {"<li class=\"item\"><a href=\"/products/", "</a></li>\n"},
    {"<p class=\"description\">", "</p>\n"},
    {"<tr><td class=\"name\">", "</td><td class=\"value\">0</td></tr>\n"},
    {"<div class=\"comment\"><span class=\"author\">", "</span></div>\n"},
    {"10.0.0.1 - - [21/Nov/2026:23:59:59 +0000] \"GET /api/v2/items?q=", " HTTP/1.1\" 200 5120 \"-\" \"Mozilla/5.0\"\n"},
    {"", "\n"},
    {"<h2 class=\"title\">", "</h2>\n"},
    {"    <meta name=\"keywords\" content=\"", "\"/>\n"},
};
constexpr std::size_t kNrLines = sizeof kLines / sizeof kLines[0];

void put(std::uint8_t* dst, std::size_t& i, std::size_t len, std::string_view s)
{
    std::size_t n = std::min(s.size(), len - i);
    std::memcpy(dst + i, s.data(), n);
    i += n;
}

void text_into(std::uint8_t* dst, std::size_t len, Rng& rng)
{
    std::size_t i = 0;
    while (i < len) {
        std::uint64_t r = rng.next();
        const auto& line = kLines[r % kNrLines];
        put(dst, i, len, line[0]);
        unsigned words = 2 + unsigned((r >> 8) % 6);
        for (unsigned w = 0; w < words && i < len; ++w) {
            if (w)
                put(dst, i, len, " ");
            put(dst, i, len, pick_word(rng.next()));
        }
        put(dst, i, len, line[1]);
    }
}

// A struct like those in a heap or a kernel's slab: pointers into one
// mapping, small counters, flags, a hash, padding.
void binary_into(std::uint8_t* dst, std::size_t len, Rng& rng)
{
    std::uint8_t rec[64];
    std::size_t i = 0;
    std::uint64_t base = 0x00007f3a00000000ull + ((rng.next() & 0xffff) << 16);
    while (i < len) {
        std::uint64_t r = rng.next();
        std::uint64_t r2 = rng.next();
        std::memset(rec, 0, sizeof rec);
        std::uint64_t p1 = base + ((r & 0xfff) << 6);
        std::uint64_t p2 = base + (((r >> 12) & 0xfff) << 6);
        std::uint32_t id = std::uint32_t(r >> 32) & 0xffff;
        std::uint16_t type = std::uint16_t((r >> 48) & 7);
        std::uint16_t flags = std::uint16_t((r >> 51) & 0x11);
        std::uint32_t refs = std::uint32_t((r >> 56) & 3);
        std::uint64_t hash = r2;                 // a hash/key: incompressible
        std::uint32_t len_field = std::uint32_t(r2 >> 50) & 0xfff;
        std::memcpy(rec + 0, &p1, 8);
        std::memcpy(rec + 8, &p2, 8);
        std::memcpy(rec + 16, &id, 4);
        std::memcpy(rec + 20, &type, 2);
        std::memcpy(rec + 22, &flags, 2);
        std::memcpy(rec + 24, &refs, 4);
        std::memcpy(rec + 28, &len_field, 4);
        std::memcpy(rec + 32, &hash, 8);
        std::uint32_t lo = std::uint32_t(rng.next());
        std::memcpy(rec + 40, &lo, 4);
        // rec[44..63]: padding and unused fields, zero.
        std::size_t n = std::min(sizeof rec, len - i);
        std::memcpy(dst + i, rec, n);
        i += n;
    }
}

void random_into(std::uint8_t* dst, std::size_t len, Rng& rng)
{
    std::size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        std::uint64_t v = rng.next();
        std::memcpy(dst + i, &v, 8);
    }
    if (i < len) {
        std::uint64_t v = rng.next();
        std::memcpy(dst + i, &v, len - i);
    }
}

} // namespace

const char* page_kind_name(PageKind k)
{
    switch (k) {
    case PageKind::zero: return "zero";
    case PageKind::text: return "text";
    case PageKind::binary: return "binary";
    case PageKind::random: return "random";
    }
    return "?";
}

std::uint64_t mix(std::uint64_t a, std::uint64_t b, std::uint64_t c)
{
    std::uint64_t z = a * 0x9e3779b97f4a7c15ull ^ (b + 0x632be59bd9b4e019ull) * 0xbf58476d1ce4e5b9ull ^
                      (c + 0x8cb92ba72f3d8dd7ull) * 0x94d049bb133111ebull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void fill_page(PageKind kind, std::uint8_t* page, std::uint64_t seed, Pfn pfn, std::uint64_t version)
{
    if (kind == PageKind::zero) {
        std::memset(page, 0, kPageSize);
        return;
    }
    Rng rng(mix(seed, pfn, version));
    // The unique tag: 16 bytes, in the page's own style so text stays text.
    std::size_t tag;
    if (kind == PageKind::text) {
        static const char hex[] = "0123456789abcdef";
        char t[33] = "<!-- p=0000000000 v=00000000 -->";
        for (int i = 0; i < 10; ++i)
            t[7 + i] = hex[(pfn >> (36 - 4 * i)) & 15];
        for (int i = 0; i < 8; ++i)
            t[20 + i] = hex[(version >> (28 - 4 * i)) & 15];
        std::memcpy(page, t, 32);
        tag = 32;
    } else {
        std::memcpy(page, &pfn, 8);
        std::memcpy(page + 8, &version, 8);
        tag = 16;
    }
    switch (kind) {
    case PageKind::text: text_into(page + tag, kPageSize - tag, rng); break;
    case PageKind::binary: binary_into(page + tag, kPageSize - tag, rng); break;
    case PageKind::random: random_into(page + tag, kPageSize - tag, rng); break;
    case PageKind::zero: break;
    }
}

void write_text(std::uint8_t* dst, std::size_t len, Rng& rng) { text_into(dst, len, rng); }
void write_binary(std::uint8_t* dst, std::size_t len, Rng& rng) { binary_into(dst, len, rng); }
void write_random(std::uint8_t* dst, std::size_t len, Rng& rng) { random_into(dst, len, rng); }

} // namespace fastmig::sim
