// The pre-shared key: its file, its text form, and random bytes.
#include "stream/auth/auth.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

namespace fastmig::auth {

Key parse_key_hex(const std::string& text, const std::string& what)
{
    std::string hex;
    for (char c : text) {
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
            continue;
        if (!std::isxdigit(static_cast<unsigned char>(c)))
            throw Error(what + ": the key must be hexadecimal (make one with 'fastmig keygen FILE')");
        hex += c;
    }
    if (hex.size() % 2)
        throw Error(what + ": odd number of hex digits");
    Key k;
    for (std::size_t i = 0; i < hex.size(); i += 2)
        k.push_back(static_cast<std::uint8_t>(std::stoul(hex.substr(i, 2), nullptr, 16)));
    if (k.size() < kMinKeySize || k.size() > kMaxKeySize)
        throw Error(what + ": the key is " + std::to_string(k.size()) + " bytes, must be " +
                    std::to_string(kMinKeySize) + ".." + std::to_string(kMaxKeySize) + " (32 recommended)");
    return k;
}

Key load_key_file(const std::string& path)
{
    const std::string what = "key file " + path;
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd)
        throw Error(what + ": " + std::strerror(errno));
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0)
        throw Error(what + ": " + std::strerror(errno));
    if (!S_ISREG(st.st_mode))
        throw Error(what + ": not a regular file");
    // The same rule as ssh for private keys: a secret others can read is
    // not a secret, and one others can write is not ours.
    if (st.st_mode & 077) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        throw Error(what + ": permissions " + mode + " are too open: the group or others may access it (chmod 600 " +
                    path + ")");
    }
    if (st.st_size > 4096)
        throw Error(what + ": " + std::to_string(st.st_size) + " bytes is too large for a key");
    std::string text(static_cast<std::size_t>(st.st_size), '\0');
    std::size_t got = 0;
    while (got < text.size()) {
        ssize_t n = ::read(fd.get(), text.data() + got, text.size() - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            throw Error(what + ": " + std::strerror(errno));
        if (n == 0)
            break;
        got += static_cast<std::size_t>(n);
    }
    text.resize(got);
    return parse_key_hex(text, what);
}

void random_bytes(std::span<std::uint8_t> out)
{
    std::size_t got = 0;
    while (got < out.size()) {
        ssize_t n = ::getrandom(out.data() + got, out.size() - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            throw_errno("getrandom");
        got += static_cast<std::size_t>(n);
    }
}

std::string make_key_hex(std::size_t bytes)
{
    if (bytes < kMinKeySize || bytes > kMaxKeySize)
        throw Error("a key must be " + std::to_string(kMinKeySize) + ".." + std::to_string(kMaxKeySize) + " bytes");
    Key k(bytes);
    random_bytes(k);
    std::string s;
    char b[3];
    for (auto c : k) {
        std::snprintf(b, sizeof b, "%02x", c);
        s += b;
    }
    return s;
}

void write_new_key_file(const std::string& path)
{
    Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd)
        throw Error("key file " + path + ": " + std::strerror(errno) + (errno == EEXIST ? " (never overwritten)" : ""));
    // O_CREAT's mode is filtered by the umask: make sure of 0600.
    ::fchmod(fd.get(), 0600);
    std::string line = make_key_hex() + "\n";
    write_all(fd.get(), {reinterpret_cast<const std::uint8_t*>(line.data()), line.size()}, std::chrono::seconds(5));
    if (::fsync(fd.get()) != 0)
        throw Error("key file " + path + ": " + std::strerror(errno));
}

} // namespace fastmig::auth
