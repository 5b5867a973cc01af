// The pre-shared-key handshake (docs/stream-format.md, Handshake): nonces,
// the suite, HKDF-SHA256 key schedule, HMAC-SHA256 proofs, all from nettle.
#include "stream/auth/auth.hpp"
#include "stream/bytes.hpp"

#include <cstring>

#include <nettle/hkdf.h>
#include <nettle/hmac.h>
#include <nettle/memops.h>

namespace fastmig::auth {

namespace {

constexpr std::size_t kHelloSize = 8 + kNonceSize;
constexpr std::size_t kChallengeSize = 8 + kNonceSize + kProofSize;

constexpr char kProofD[] = "fastmig psk v1 destination proof";
constexpr char kProofS[] = "fastmig psk v1 source proof";
constexpr char kKeyPrefix[] = "fastmig psk v1 record key "; // suite 1: + "S->D" or "D->S"
constexpr char kSD[] = "S->D";
constexpr char kDS[] = "D->S";

using Bytes = std::vector<std::uint8_t>;

// suite:u32 reserved:u32 nonce[32]
Bytes hello_body(Suite suite, std::span<const std::uint8_t> nonce)
{
    Bytes b(8 + kNonceSize, 0);
    bytes::store_le(b.data(), static_cast<std::uint32_t>(suite));
    std::memcpy(b.data() + 8, nonce.data(), kNonceSize);
    return b;
}

std::string describe(Suite s)
{
    return std::string(encrypts(s) ? "--cipher " : "no encryption, --cipher ") + suite_name(s) + " (suite " +
           std::to_string(static_cast<std::uint32_t>(s)) + ")";
}

// Checks the size, the suite (`want`) and the reserved field.  The
// refusals name both sides' settings: the other side reads them in ACCEPT.
void check_prefix(const char* what, std::span<const std::uint8_t> body, std::size_t size, Suite want)
{
    if (body.size() != size)
        throw AuthError(std::string(what) + ": body is " + std::to_string(body.size()) + " bytes, must be " +
                        std::to_string(size));
    const std::uint32_t v = bytes::load_le<std::uint32_t>(body.data());
    const auto got = known_suite(v);
    if (!got)
        throw AuthError(std::string(what) + ": suite " + std::to_string(v) +
                        " is not supported (this side speaks suites 1 (none), 2 (aes-256-gcm) and 3 "
                        "(chacha20-poly1305))");
    if (*got != want) {
        const bool old_source = *got == Suite::umac && std::string(what) == "auth_hello";
        throw AuthError(std::string(what) + ": the peer asks for " + describe(*got) + ", this side is set to " +
                        describe(want) + ": give both hosts the same --cipher" +
                        (old_source ? " (a fastmig older than encryption only speaks suite 1: send with a newer "
                                      "one, or receive with --cipher none)"
                                    : ""));
    }
    if (bytes::load_le<std::uint32_t>(body.data() + 4) != 0)
        throw AuthError(std::string(what) + ": reserved field is not 0");
}

// Everything both ends derive from the key and the two nonces.
struct Schedule {
    std::uint8_t prk[SHA256_DIGEST_SIZE];

    Schedule(const Key& psk, std::span<const std::uint8_t> nonce_s, std::span<const std::uint8_t> nonce_d)
    {
        std::uint8_t salt[2 * kNonceSize];
        std::memcpy(salt, nonce_s.data(), kNonceSize);
        std::memcpy(salt + kNonceSize, nonce_d.data(), kNonceSize);
        hmac_sha256_ctx c;
        hmac_sha256_set_key(&c, sizeof salt, salt);
        hkdf_extract(&c, reinterpret_cast<nettle_hash_update_func*>(hmac_sha256_update),
                     reinterpret_cast<nettle_hash_digest_func*>(hmac_sha256_digest), SHA256_DIGEST_SIZE, psk.size(),
                     psk.data(), prk);
    }
    ~Schedule() { std::memset(prk, 0, sizeof prk); }

    Bytes proof(const char* label, std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) const
    {
        hmac_sha256_ctx c;
        hmac_sha256_set_key(&c, sizeof prk, prk);
        hmac_sha256_update(&c, std::strlen(label), reinterpret_cast<const std::uint8_t*>(label));
        hmac_sha256_update(&c, a.size(), a.data());
        hmac_sha256_update(&c, b.size(), b.data());
        Bytes out(kProofSize);
        hmac_sha256_digest(&c, out.size(), out.data());
        return out;
    }

    // Fills `k` (`n` bytes) with the record key of one direction.
    void record_key(const std::string& label, std::uint8_t* k, std::size_t n) const
    {
        hmac_sha256_ctx c;
        hmac_sha256_set_key(&c, sizeof prk, prk);
        hkdf_expand(&c, reinterpret_cast<nettle_hash_update_func*>(hmac_sha256_update),
                    reinterpret_cast<nettle_hash_digest_func*>(hmac_sha256_digest), SHA256_DIGEST_SIZE,
                    label.size(), reinterpret_cast<const std::uint8_t*>(label.data()), n, k);
    }

    // Keys the write side for direction `send` ("S->D" or "D->S") and the
    // read side for the other.  Suite 1 keeps its labels of before the
    // ciphers; an AEAD's label names it, so no key serves two suites.
    void key(wire::RecordWriter& w, wire::RecordReader& r, Suite suite, const char* send, const char* recv) const
    {
        std::uint8_t k[kAeadKeySize];
        if (!encrypts(suite)) {
            record_key(std::string(kKeyPrefix) + send, k, kRecordKeySize);
            w.set_sealer(std::make_unique<MacSealer>(
                std::make_unique<RecordMac>(std::span<const std::uint8_t>(k, kRecordKeySize))));
            record_key(std::string(kKeyPrefix) + recv, k, kRecordKeySize);
            r.set_verifier(std::make_unique<RecordTagVerifier>(std::span<const std::uint8_t>(k, kRecordKeySize)));
        } else {
            const std::string prefix = std::string("fastmig psk v1 ") + suite_name(suite) + " key ";
            record_key(prefix + send, k, kAeadKeySize);
            w.set_sealer(std::make_unique<AeadSealer>(suite, k));
            record_key(prefix + recv, k, kAeadKeySize);
            r.set_verifier(std::make_unique<RecordOpener>(suite, k));
        }
        std::memset(k, 0, sizeof k);
    }
};

bool same(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b)
{
    return a.size() == b.size() && memeql_sec(a.data(), b.data(), a.size());
}

} // namespace

void authenticate_to_destination(const Key& psk, wire::RecordWriter& w, wire::ByteSource& src, wire::RecordReader& r,
                                 Suite suite)
{
    std::uint8_t nonce_s[kNonceSize];
    random_bytes(nonce_s);
    const Bytes hello = hello_body(suite, nonce_s);
    w.write(wire::encode_record(wire::RecordType::auth_hello, hello),
            {wire::kSourceMagic.data(), wire::kSourceMagic.size()});

    try {
        wire::read_magic(src, wire::kReplyMagic);
    } catch (const StreamError& e) {
        throw AuthError("the peer is not a fastmig receiver (" + e.cause() + ")");
    } catch (const Error& e) {
        throw AuthError("the destination closed the connection before answering AUTH_HELLO (" + e.cause() +
                        "): it may not know authentication (an older fastmig)");
    }
    auto rec = r.read();
    if (rec.type == wire::RecordType::accept) {
        auto a = wire::parse_accept(rec.body);
        // A destination older than encryption knows suite 1 only, and says
        // so: name the way out rather than fall back on our own (the refusal
        // is not authenticated: a fallback would let anyone on the path
        // switch the encryption off).
        const bool old_peer = encrypts(suite) && a.message.find("is not supported") != std::string::npos;
        throw AuthError("the destination refused to authenticate: " +
                        (a.message.empty() ? std::string("no reason given") : a.message) +
                        (old_peer ? " (a fastmig older than encryption: upgrade it, or send with --cipher none to "
                                    "migrate authenticated but in clear)"
                                  : ""));
    }
    if (rec.type != wire::RecordType::auth_challenge)
        throw AuthError(std::string("expected AUTH_CHALLENGE from the destination, got ") +
                        wire::record_type_name(static_cast<std::uint32_t>(rec.type)));
    check_prefix("auth_challenge", rec.body, kChallengeSize, suite);
    const Bytes challenge(rec.body.begin(), rec.body.end());
    std::span<const std::uint8_t> nonce_d(challenge.data() + 8, kNonceSize);
    std::span<const std::uint8_t> proof_d(challenge.data() + 8 + kNonceSize, kProofSize);

    Schedule ks(psk, nonce_s, nonce_d);
    if (!same(proof_d, ks.proof(kProofD, hello, {challenge.data(), 8 + kNonceSize})))
        throw AuthError("the destination's proof does not verify: it holds a different key (check --psk-file on "
                        "both hosts)");
    const Bytes proof_s = ks.proof(kProofS, hello, challenge);
    w.write(wire::encode_record(wire::RecordType::auth_proof, proof_s));
    ks.key(w, r, suite, kSD, kDS);
}

void authenticate_source(const Key& psk, std::span<const std::uint8_t> hello_in, wire::RecordWriter& w, wire::RecordReader& r,
                         Suite suite)
{
    check_prefix("auth_hello", hello_in, kHelloSize, suite);
    const Bytes hello(hello_in.begin(), hello_in.end());
    std::span<const std::uint8_t> nonce_s(hello.data() + 8, kNonceSize);
    std::uint8_t nonce_d[kNonceSize];
    random_bytes(nonce_d);

    Schedule ks(psk, nonce_s, nonce_d);
    Bytes challenge = hello_body(suite, nonce_d);
    const Bytes proof_d = ks.proof(kProofD, hello, challenge);
    challenge.resize(kChallengeSize);
    std::memcpy(challenge.data() + 8 + kNonceSize, proof_d.data(), kProofSize);
    w.write(wire::encode_record(wire::RecordType::auth_challenge, challenge),
            {wire::kReplyMagic.data(), wire::kReplyMagic.size()});

    wire::Record rec;
    try {
        rec = r.read();
    } catch (const Error& e) {
        if (e.is_stream())
            throw;
        throw AuthError("the source closed the connection instead of proving it holds the key (" + e.cause() +
                        "): its key differs from ours (see the source's error)");
    }
    if (rec.type != wire::RecordType::auth_proof)
        throw AuthError(std::string("expected AUTH_PROOF from the source, got ") +
                        wire::record_type_name(static_cast<std::uint32_t>(rec.type)));
    if (rec.body.size() != kProofSize)
        throw AuthError("auth_proof: body is " + std::to_string(rec.body.size()) + " bytes, must be " +
                        std::to_string(kProofSize));
    if (!same(rec.body, ks.proof(kProofS, hello, challenge)))
        throw AuthError("the source's proof does not verify: it holds a different key (check --psk-file on both "
                        "hosts)");
    ks.key(w, r, suite, kDS, kSD);
}

} // namespace fastmig::auth
