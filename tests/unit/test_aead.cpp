// Encrypted records (stream/auth/aead.cpp; docs/stream-format.md,
// Encryption): both AEAD suites seal and open records, every altered byte,
// replay, reorder or drop is refused, keys differ per direction and per
// suite, suites must match, and the engine migrates bit-exact encrypted.
#define BOOST_TEST_MODULE aead
#include <boost/test/unit_test.hpp>

#include "fake_domain.hpp"
#include "migrate_pairs.hpp"
#include "stream/auth/auth.hpp"
#include "stream/receiver.hpp"
#include "stream/sender.hpp"
#include "stream/transport.hpp"
#include "stream/wire.hpp"

#include <algorithm>
#include <future>

#include <unistd.h>

using namespace fastmig;
using namespace fastmig::test;

namespace {

constexpr auth::Suite kAeads[] = {auth::Suite::aes256_gcm, auth::Suite::chacha20_poly1305};

std::vector<std::uint8_t> key32(std::uint8_t fill) { return std::vector<std::uint8_t>(auth::kAeadKeySize, fill); }

template <class F>
std::string error_of(F&& f)
{
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A recognisable "guest page": what must never show on an encrypted wire.
std::vector<std::uint8_t> pattern(std::size_t n)
{
    const std::string word = "SECRET-PAGE-PATTERN-";
    std::vector<std::uint8_t> v(n);
    for (std::size_t i = 0; i < n; ++i)
        v[i] = static_cast<std::uint8_t>(word[i % word.size()]);
    return v;
}

bool has_pattern(std::span<const std::uint8_t> bytes)
{
    const std::string word = "SECRET-PAGE-PATTERN-";
    return std::search(bytes.begin(), bytes.end(), word.begin(), word.end()) != bytes.end();
}

std::vector<std::vector<std::uint8_t>> records()
{
    return {wire::encode_round_end({0, 5}), wire::encode_platform_state(7, pattern(100)),
            // Larger than the sealer's 64 KiB slice, not a multiple of anything.
            wire::encode_platform_state(9, pattern(300001)), wire::encode_end()};
}

// The records sealed one by one, each given as pieces of awkward sizes (as
// page data arrives: headers, descriptors, pages, compressed blobs).
std::vector<std::vector<std::uint8_t>> sealed(const std::vector<std::vector<std::uint8_t>>& recs, auth::Suite suite,
                                              std::uint8_t key)
{
    auth::AeadSealer s(suite, key32(key));
    std::vector<std::vector<std::uint8_t>> out;
    const std::size_t cuts[] = {1, 15, 4097, 63, 70000, 3};
    for (auto& r : recs) {
        std::vector<iovec> pieces;
        std::size_t at = 0;
        for (std::size_t i = 0; at < r.size(); ++i) {
            std::size_t n = std::min(cuts[i % 6], r.size() - at);
            pieces.push_back({const_cast<std::uint8_t*>(r.data() + at), n});
            at += n;
        }
        std::vector<iovec> iov;
        const std::size_t bytes = s.seal(pieces, iov);
        std::vector<std::uint8_t> w;
        for (auto& v : iov)
            w.insert(w.end(), static_cast<std::uint8_t*>(v.iov_base), static_cast<std::uint8_t*>(v.iov_base) + v.iov_len);
        BOOST_TEST(w.size() == bytes);
        out.push_back(std::move(w));
    }
    return out;
}

std::vector<std::uint8_t> join(const std::vector<std::vector<std::uint8_t>>& parts, std::initializer_list<int> order)
{
    std::vector<std::uint8_t> v;
    for (int i : order)
        v.insert(v.end(), parts[i].begin(), parts[i].end());
    return v;
}

std::vector<std::uint8_t> join_all(const std::vector<std::vector<std::uint8_t>>& parts)
{
    std::vector<std::uint8_t> v;
    for (auto& p : parts)
        v.insert(v.end(), p.begin(), p.end());
    return v;
}

// Opens every record of `bytes`; returns their bodies, or throws.
std::vector<std::vector<std::uint8_t>> open_all(std::span<const std::uint8_t> bytes, auth::Suite suite,
                                                std::uint8_t key)
{
    wire::MemorySource src(bytes);
    wire::RecordReader r(src);
    r.set_verifier(std::make_unique<auth::RecordOpener>(suite, key32(key)));
    std::vector<std::vector<std::uint8_t>> bodies;
    while (src.remaining() > 0) {
        auto rec = r.read();
        bodies.emplace_back(rec.body.begin(), rec.body.end());
    }
    return bodies;
}

SendOptions quick_send(const auth::Key& psk, auth::Suite suite)
{
    SendOptions o;
    o.io_timeout = std::chrono::milliseconds(5000);
    o.done_timeout = std::chrono::milliseconds(5000);
    o.verify = true;
    o.psk = psk;
    o.suite = suite;
    return o;
}

ReceiveOptions quick_receive(const auth::Key& psk, auth::Suite suite)
{
    ReceiveOptions o;
    o.io_timeout = std::chrono::milliseconds(5000);
    o.psk = psk;
    o.suite = suite;
    return o;
}

} // namespace

BOOST_AUTO_TEST_CASE(sealed_records_open_to_the_same_bodies_and_hide_them)
{
    const auto recs = records();
    for (auto suite : kAeads) {
        BOOST_TEST_CONTEXT(auth::suite_name(suite))
        {
            const auto parts = sealed(recs, suite, 1);
            for (std::size_t i = 0; i < recs.size(); ++i) {
                // Same framing plus a tag; header in clear but for its crc.
                BOOST_TEST(parts[i].size() == recs[i].size() + auth::kTagSize);
                BOOST_TEST(std::equal(recs[i].begin(), recs[i].begin() + 8, parts[i].begin()));
                BOOST_TEST(std::all_of(parts[i].begin() + 8, parts[i].begin() + 12, [](auto b) { return b == 0; }));
            }
            const auto wire_bytes = join_all(parts);
            BOOST_TEST(has_pattern(join_all(recs)));
            BOOST_TEST(!has_pattern(wire_bytes));
            const auto bodies = open_all(wire_bytes, suite, 1);
            BOOST_REQUIRE(bodies.size() == recs.size());
            for (std::size_t i = 0; i < recs.size(); ++i) {
                const std::size_t len = recs[i][4] | recs[i][5] << 8 | recs[i][6] << 16 | recs[i][7] << 24;
                BOOST_TEST((bodies[i] == std::vector<std::uint8_t>(recs[i].begin() + 16, recs[i].begin() + 16 + len)));
            }
        }
    }
    // The two ciphers differ, and neither opens the other's records.
    const auto a = join_all(sealed(recs, auth::Suite::aes256_gcm, 1));
    const auto c = join_all(sealed(recs, auth::Suite::chacha20_poly1305, 1));
    BOOST_TEST((a != c));
    BOOST_TEST(contains(error_of([&] { open_all(a, auth::Suite::chacha20_poly1305, 1); }), "authentication failed"));
    BOOST_TEST(contains(error_of([&] { open_all(c, auth::Suite::aes256_gcm, 1); }), "authentication failed"));
}

BOOST_AUTO_TEST_CASE(a_wrong_key_does_not_open)
{
    for (auto suite : kAeads) {
        const auto bytes = join_all(sealed(records(), suite, 2));
        auto err = error_of([&] { open_all(bytes, suite, 3); });
        BOOST_TEST(contains(err, "round_end: authentication failed: the tag of encrypted record 0"), err);
    }
}

BOOST_AUTO_TEST_CASE(every_flipped_header_ciphertext_or_tag_byte_is_refused)
{
    // The second record (a 100-byte state blob): each of its bytes, header,
    // ciphertext, padding and tag, flipped alone.
    const std::vector<std::vector<std::uint8_t>> recs = {wire::encode_round_end({0, 5}),
                                                         wire::encode_platform_state(7, pattern(100)),
                                                         wire::encode_end()};
    for (auto suite : kAeads) {
        const auto parts = sealed(recs, suite, 4);
        const auto good = join_all(parts);
        BOOST_TEST(open_all(good, suite, 4).size() == 3u);
        for (std::size_t at = parts[0].size(); at < parts[0].size() + parts[1].size(); ++at) {
            for (std::uint8_t bit : {0x01, 0x80}) {
                auto bad = good;
                bad[at] ^= bit;
                auto err = error_of([&] { open_all(bad, suite, 4); });
                const bool in_header = at < parts[0].size() + wire::kRecordHeaderSize;
                BOOST_TEST_CONTEXT(auth::suite_name(suite) << " byte " << at << " bit " << int(bit))
                {
                    // A header flip may be refused by the header checks
                    // (type, limit, reserved, crc field) before the tag.
                    BOOST_TEST(!err.empty());
                    if (!in_header)
                        BOOST_TEST(contains(err, "authentication failed"), err);
                }
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(replayed_reordered_or_dropped_records_are_refused)
{
    const std::vector<std::vector<std::uint8_t>> recs = {wire::encode_round_end({0, 5}),
                                                         wire::encode_platform_state(7, pattern(64)),
                                                         wire::encode_end()};
    for (auto suite : kAeads) {
        const auto parts = sealed(recs, suite, 5);
        BOOST_TEST(open_all(join(parts, {0, 1, 2}), suite, 5).size() == 3u);
        for (auto order : {std::initializer_list<int>{0, 0, 1, 2}, {0, 1, 1, 2}, {1, 0, 2}, {0, 2, 1}, {0, 2}, {1, 2}}) {
            auto err = error_of([&] { open_all(join(parts, order), suite, 5); });
            BOOST_TEST(contains(err, "authentication failed"), err);
        }
    }
}

// A record the source sealed, reflected back to it by a man in the middle,
// must not open: the two directions have different keys.
BOOST_AUTO_TEST_CASE(direction_keys_differ_after_the_handshake)
{
    for (auto suite : kAeads) {
        Pair p;
        const auth::Key psk(32, 0x5a);
        wire::RecordWriter sw(p.a.get(), std::chrono::seconds(5)), dw(p.b.get(), std::chrono::seconds(5));
        SocketSource ss(p.a.get(), std::chrono::seconds(5)), ds(p.b.get(), std::chrono::seconds(5));
        wire::RecordReader sr(ss), dr(ds);
        const auto rec = wire::encode_platform_state(3, pattern(40));
        auto dest = std::async(std::launch::async, [&] {
            wire::read_magic(ds, wire::kSourceMagic);
            auto hello = dr.read();
            std::vector<std::uint8_t> body(hello.body.begin(), hello.body.end());
            auth::authenticate_source(psk, body, dw, dr, suite);
            // The source's record, raw, sent back as if from the destination.
            std::vector<std::uint8_t> raw(rec.size() + auth::kTagSize);
            ds.read_exact(raw);
            BOOST_TEST(!has_pattern(raw));
            write_all(p.b.get(), raw, std::chrono::seconds(5));
        });
        auth::authenticate_to_destination(psk, sw, ss, sr, suite);
        sw.write(rec);
        dest.get();
        auto err = error_of([&] { sr.read(); });
        BOOST_TEST(contains(err, "authentication failed"), err);
    }
}

BOOST_AUTO_TEST_CASE(encrypted_migration_is_bit_exact_with_channels_codecs_xbzrle)
{
    for (auto suite : kAeads) {
        FakeDomain src(6000, 7, true);
        src.start_writer(2, 300);
        while (src.writes_ < 20)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        FakeProvider prov;
        const auth::Key psk(32, 0x11);
        auto so = quick_send(psk, suite);
        so.pipeline.compression.algorithm = codec::Algorithm::igzip;
        so.pipeline.max_bandwidth = 100e6; // a slow link: compressing pays (the pipeline starts raw)
        so.pipeline.xbzrle_cache_bytes = 8u << 20;
        so.pipeline.threads = 2;
        so.policy.downtime_target_ms = 0.5;
        so.policy.max_rounds = 5;
        auto o = migrate_over_pairs(src, prov, so, quick_receive(psk, suite), 3);
        src.stop_writer();
        BOOST_REQUIRE_MESSAGE(o.sent, o.send_error);
        BOOST_REQUIRE_MESSAGE(o.received, o.receive_error);
        BOOST_TEST((prov.last->mem == src.snapshot_));
        BOOST_TEST(*o.sent->verified);
        BOOST_TEST(prov.last->running);
        BOOST_TEST(o.sent->pages_deflate > 0u);
        BOOST_TEST(o.received->bytes_received == o.sent->bytes_sent);
    }
}

BOOST_AUTO_TEST_CASE(a_suite_mismatch_is_refused_naming_both_settings)
{
    const auth::Key psk(32, 0x11);
    {
        FakeDomain src(500, 2);
        FakeProvider prov;
        auto o = migrate_over_pairs(src, prov, quick_send(psk, auth::Suite::aes256_gcm),
                                    quick_receive(psk, auth::Suite::chacha20_poly1305), 2);
        BOOST_TEST(!o.sent);
        BOOST_TEST(!prov.last);
        BOOST_TEST(src.running());
        BOOST_TEST(contains(o.send_error, "asks for --cipher aes-256-gcm (suite 2), this side is set to --cipher "
                                          "chacha20-poly1305 (suite 3)"),
                   o.send_error);
    }
    {
        // A source that does not encrypt (--cipher none, or older) to a
        // destination that requires it.
        FakeDomain src(500, 3);
        FakeProvider prov;
        auto o = migrate_over_pairs(src, prov, quick_send(psk, auth::Suite::umac),
                                    quick_receive(psk, auth::Suite::aes256_gcm), 1);
        BOOST_TEST(!o.sent);
        BOOST_TEST(!prov.last);
        BOOST_TEST(src.running());
        BOOST_TEST(contains(o.send_error, "no encryption, --cipher none (suite 1)"), o.send_error);
        BOOST_TEST(contains(o.send_error, "receive with --cipher none"), o.send_error);
    }
    {
        // Both none: authenticated, in clear, as before encryption.
        FakeDomain src(500, 4);
        FakeProvider prov;
        auto o = migrate_over_pairs(src, prov, quick_send(psk, auth::Suite::umac),
                                    quick_receive(psk, auth::Suite::umac), 2);
        BOOST_REQUIRE_MESSAGE(o.sent, o.send_error);
        BOOST_TEST((prov.last->mem == src.snapshot_));
    }
}

// A destination older than encryption answers AUTH_HELLO suite 2 with its
// refusal; the source says what to do instead of falling back on its own.
BOOST_AUTO_TEST_CASE(an_older_destination_is_a_clear_refusal_not_a_fallback)
{
    FakeDomain src(500, 6);
    Pair p;
    std::vector<std::uint8_t> out(wire::kReplyMagic.begin(), wire::kReplyMagic.end());
    auto acc = wire::encode_accept({wire::kAcceptAuth, "auth_hello: suite 2 is not supported (this side speaks suite 1)"});
    out.insert(out.end(), acc.begin(), acc.end());
    BOOST_REQUIRE(::write(p.b.get(), out.data(), out.size()) == ssize_t(out.size()));
    auto err = error_of([&] { send_domain(src, p.a.get(), quick_send(auth::Key(32, 1), auth::Suite::aes256_gcm)); });
    BOOST_TEST(contains(err, "suite 2 is not supported"), err);
    BOOST_TEST(contains(err, "send with --cipher none to migrate authenticated but in clear"), err);
    BOOST_TEST(src.running());
}
