// Durable outcome records: see stream/outcome_store.hpp for the states and
// docs/stream-format.md (Resolving a lost COMMIT) for why they suffice.
#include "stream/outcome_store.hpp"
#include "stream/bytes.hpp"

#include "stream/transport.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <memory>

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace fastmig {

namespace {

constexpr std::uint8_t kMagic[8] = {'F', 'M', 'O', 'U', 'T', 'C', '1', '\n'};
constexpr std::size_t kFixed = 48;
constexpr std::size_t kMaxFile = kFixed + wire::kMaxNameLength + 4;
// An in-place change is one write at offset 0: inside the first sector, so
// a disk that writes sectors whole never tears it (one that does fails the CRC).
static_assert(kMaxFile <= 512, "an outcome record must fit in one 512-byte sector");
constexpr char kSuffix[] = ".outcome";
constexpr char kTmpPrefix[] = ".tmp.";


std::uint64_t now_unix_ms()
{
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
}

void mkdir_p(const std::string& dir)
{
    std::string cur;
    std::size_t pos = 0;
    while (pos != std::string::npos) {
        pos = dir.find('/', pos + 1);
        cur = dir.substr(0, pos);
        if (cur.empty())
            continue;
        if (::mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST)
            throw_errno("outcome records: mkdir " + cur);
    }
    struct stat st{};
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        throw Error("outcome records: " + dir + " is not a directory");
}

void fsync_dir(const std::string& dir)
{
    Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!d || ::fsync(d.get()) != 0)
        throw_errno("outcome records: fsync " + dir);
}

bool has_suffix(const std::string& s, const char* suffix)
{
    const std::size_t n = std::strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

} // namespace

const char* outcome_state_name(OutcomeState s)
{
    switch (s) {
    case OutcomeState::pending: return "pending";
    case OutcomeState::committed: return "committed";
    case OutcomeState::started: return "started";
    case OutcomeState::destroyed: return "destroyed";
    }
    return "invalid";
}

std::vector<std::uint8_t> encode_outcome_entry(const OutcomeEntry& e)
{
    const std::string name = e.domain.substr(0, wire::kMaxNameLength);
    std::vector<std::uint8_t> b(kFixed + name.size() + 4, 0);
    std::memcpy(b.data(), kMagic, sizeof kMagic);
    std::memcpy(b.data() + 8, e.id.data(), e.id.size());
    bytes::store_le(b.data() + 24, static_cast<std::uint32_t>(e.state));
    bytes::store_le(b.data() + 28, static_cast<std::uint32_t>(name.size()));
    bytes::store_le(b.data() + 32, e.updated_unix_ms);
    bytes::store_le(b.data() + 40, e.verify_digest);
    std::memcpy(b.data() + kFixed, name.data(), name.size());
    const std::size_t body = kFixed + name.size();
    bytes::store_le(b.data() + body, ~wire::crc32c({b.data(), body}));
    return b;
}

OutcomeEntry parse_outcome_entry(std::span<const std::uint8_t> b)
{
    if (b.size() < kFixed + 4)
        throw StreamError("outcome record: " + std::to_string(b.size()) + " bytes, a record has at least " +
                          std::to_string(kFixed + 4) + " (truncated)");
    if (std::memcmp(b.data(), kMagic, sizeof kMagic) != 0)
        throw StreamError("outcome record: bad magic (not an outcome record)");
    const std::uint64_t name_len = bytes::load_le<std::uint32_t>(b.data() + 28);
    if (name_len > wire::kMaxNameLength || b.size() != kFixed + name_len + 4)
        throw StreamError("outcome record: name length " + std::to_string(name_len) + " does not match a file of " +
                          std::to_string(b.size()) + " bytes (torn or truncated)");
    const std::size_t body = kFixed + name_len;
    if (bytes::load_le<std::uint32_t>(b.data() + body) != static_cast<std::uint32_t>(~wire::crc32c({b.data(), body})))
        throw StreamError("outcome record: CRC mismatch (damaged)");
    OutcomeEntry e;
    std::memcpy(e.id.data(), b.data() + 8, e.id.size());
    const std::uint64_t st = bytes::load_le<std::uint32_t>(b.data() + 24);
    if (st < 1 || st > 4)
        throw StreamError("outcome record: state " + std::to_string(st) + " is not 1..4");
    e.state = static_cast<OutcomeState>(st);
    e.updated_unix_ms = bytes::load_le<std::uint64_t>(b.data() + 32);
    e.verify_digest = bytes::load_le<std::uint64_t>(b.data() + 40);
    e.domain.assign(reinterpret_cast<const char*>(b.data()) + kFixed, name_len);
    return e;
}

// Holds the directory's flock for one read-modify-write: between threads of
// this process (each lock is its own open file description) and between
// processes (a restarted receiver and a dying one).
class OutcomeStore::Locked {
public:
    explicit Locked(const std::string& dir) : fd_(::open((dir + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600))
    {
        if (!fd_)
            throw_errno("outcome records: open " + dir + "/.lock");
        while (::flock(fd_.get(), LOCK_EX) != 0)
            if (errno != EINTR)
                throw_errno("outcome records: flock " + dir + "/.lock");
    }

private:
    Fd fd_; // closing it releases the lock
};

OutcomeStore::OutcomeStore(std::string dir, std::chrono::seconds keep) : dir_(std::move(dir)), keep_(keep)
{
    if (dir_.empty())
        throw Error("outcome records: empty directory name");
    while (dir_.size() > 1 && dir_.back() == '/')
        dir_.pop_back();
    mkdir_p(dir_);
    prune();
}

std::string OutcomeStore::path_of(const wire::MigrationId& id) const
{
    return dir_ + "/" + wire::migration_id_hex(id) + kSuffix;
}

OutcomeLookup OutcomeStore::read(const wire::MigrationId& id) const
{
    OutcomeLookup l;
    const std::string path = path_of(id);
    Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!f) {
        if (errno == ENOENT)
            return l; // missing
        l.kind = OutcomeLookup::corrupt;
        l.why = path + ": " + std::strerror(errno);
        return l;
    }
    std::vector<std::uint8_t> b(kMaxFile + 1);
    std::size_t got = 0;
    for (;;) {
        ssize_t n = ::read(f.get(), b.data() + got, b.size() - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            l.kind = OutcomeLookup::corrupt;
            l.why = path + ": " + std::strerror(errno);
            return l;
        }
        if (n == 0 || (got += std::size_t(n)) == b.size())
            break;
    }
    b.resize(got);
    try {
        l.entry = parse_outcome_entry(b);
    } catch (const Error& e) {
        l.kind = OutcomeLookup::corrupt;
        l.why = path + ": " + e.cause();
        return l;
    }
    if (l.entry.id != id) {
        l.kind = OutcomeLookup::corrupt;
        l.why = path + ": holds the record of another migration";
        return l;
    }
    const std::uint64_t keep_ms = std::uint64_t(keep_.count()) * 1000;
    l.kind = l.entry.updated_unix_ms + keep_ms < now_unix_ms() ? OutcomeLookup::expired : OutcomeLookup::found;
    return l;
}

OutcomeLookup OutcomeStore::lookup(const wire::MigrationId& id) const
{
    Locked l(dir_);
    return read(id);
}

void OutcomeStore::create(const OutcomeEntry& e)
{
    const std::string tmp = dir_ + "/" + kTmpPrefix + std::to_string(::getpid()) + "." + wire::migration_id_hex(e.id);
    OutcomeEntry stamped = e;
    stamped.updated_unix_ms = now_unix_ms();
    const auto bytes = encode_outcome_entry(stamped);
    {
        Fd f(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        if (!f)
            throw_errno("outcome records: create " + tmp);
        write_all(f.get(), bytes, std::chrono::milliseconds(10000));
        if (::fsync(f.get()) != 0)
            throw_errno("outcome records: fsync " + tmp);
    }
    if (::rename(tmp.c_str(), path_of(e.id).c_str()) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        errno = err;
        throw_errno("outcome records: rename to " + path_of(e.id));
    }
    fsync_dir(dir_);
}

void OutcomeStore::overwrite(const OutcomeEntry& e, Sync s)
{
    const std::string path = path_of(e.id);
    OutcomeEntry stamped = e;
    stamped.updated_unix_ms = now_unix_ms();
    const auto bytes = encode_outcome_entry(stamped);
    Fd f(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!f)
        throw_errno("outcome records: open " + path);
    struct stat st{};
    // Same id, same name: same length.  Anything else is not the file announce made.
    if (::fstat(f.get(), &st) != 0 || std::uint64_t(st.st_size) != bytes.size())
        throw Error("outcome records: " + path + " is not " + std::to_string(bytes.size()) +
                    " bytes long: not rewritten in place");
    std::size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::pwrite(f.get(), bytes.data() + done, bytes.size() - done, off_t(done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            throw_errno("outcome records: write " + path);
        done += std::size_t(n);
    }
    if (s == Sync::data && ::fdatasync(f.get()) != 0)
        throw_errno("outcome records: fdatasync " + path);
}

void OutcomeStore::flush(const wire::MigrationId& id)
{
    const std::string path = path_of(id);
    Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!f || ::fdatasync(f.get()) != 0)
        throw_errno("outcome records: fdatasync " + path);
}

void OutcomeStore::announce(const wire::MigrationId& id, const std::string& domain)
{
    Locked l(dir_);
    auto cur = read(id);
    if (cur.kind != OutcomeLookup::missing)
        throw Error("outcome records: migration " + wire::migration_id_hex(id) +
                    " has a record already (an id is used once: a replayed or repeated stream)");
    OutcomeEntry e;
    e.id = id;
    e.state = OutcomeState::pending;
    e.domain = domain;
    create(e);
}

bool OutcomeStore::decide_commit(const wire::MigrationId& id)
{
    Locked l(dir_);
    auto cur = read(id);
    if (cur.kind != OutcomeLookup::found)
        throw Error("outcome records: cannot record COMMIT of migration " + wire::migration_id_hex(id) + ": " +
                    (cur.kind == OutcomeLookup::corrupt ? cur.why : std::string("its record is gone")));
    if (cur.entry.state == OutcomeState::destroyed)
        return false;
    if (cur.entry.state != OutcomeState::pending)
        throw Error(std::string("outcome records: COMMIT of a migration already ") + outcome_state_name(cur.entry.state));
    cur.entry.state = OutcomeState::committed;
    overwrite(cur.entry, Sync::data);
    return true;
}

void OutcomeStore::mark_started(const wire::MigrationId& id, std::uint64_t verify_digest)
{
    Locked l(dir_);
    auto cur = read(id);
    if (cur.kind != OutcomeLookup::found || cur.entry.state != OutcomeState::committed)
        throw Error("outcome records: migration " + wire::migration_id_hex(id) + " is not committed");
    cur.entry.state = OutcomeState::started;
    cur.entry.verify_digest = verify_digest;
    overwrite(cur.entry, Sync::none);
}

OutcomeState OutcomeStore::decide_destroyed_by_owner(const wire::MigrationId& id)
{
    Locked l(dir_);
    auto cur = read(id);
    if (cur.kind == OutcomeLookup::missing)
        return OutcomeState::destroyed;
    if (cur.kind == OutcomeLookup::corrupt)
        throw Error("outcome records: " + cur.why);
    if (cur.entry.state == OutcomeState::started)
        throw Error("outcome records: migration " + wire::migration_id_hex(id) + " runs here: not destroyed");
    if (cur.entry.state != OutcomeState::destroyed) {
        cur.entry.state = OutcomeState::destroyed;
        overwrite(cur.entry, Sync::data);
    }
    return OutcomeState::destroyed;
}

OutcomeLookup OutcomeStore::resolve_for_query(const wire::MigrationId& id)
{
    Locked l(dir_);
    auto cur = read(id);
    if (cur.kind == OutcomeLookup::found && cur.entry.state == OutcomeState::pending) {
        cur.entry.state = OutcomeState::destroyed;
        overwrite(cur.entry, Sync::data); // before NOT_COMMITTED goes out
    }
    return cur;
}

std::size_t OutcomeStore::prune()
{
    Locked l(dir_);
    std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir_.c_str()), ::closedir);
    if (!d)
        throw_errno("outcome records: opendir " + dir_);
    const std::uint64_t now = now_unix_ms(), keep_ms = std::uint64_t(keep_.count()) * 1000;
    std::size_t removed = 0;
    while (dirent* de = ::readdir(d.get())) {
        const std::string name = de->d_name;
        const std::string path = dir_ + "/" + name;
        // Under the lock, a temporary file is one whose writer died before
        // its rename: the record it would have replaced is intact.
        if (name.rfind(kTmpPrefix, 0) == 0) {
            ::unlink(path.c_str());
            continue;
        }
        if (!has_suffix(name, kSuffix))
            continue;
        struct stat st{};
        if (::stat(path.c_str(), &st) != 0)
            continue;
        // By the file's time: a damaged record goes too, once old enough.
        const std::uint64_t mtime_ms = std::uint64_t(st.st_mtim.tv_sec) * 1000 + std::uint64_t(st.st_mtim.tv_nsec) / 1000000;
        if (mtime_ms + keep_ms < now && ::unlink(path.c_str()) == 0)
            ++removed;
    }
    return removed;
}

wire::OutcomeReply answer_outcome_query(OutcomeStore* store, const wire::MigrationId& id)
{
    wire::OutcomeReply r;
    r.id = id;
    if (!store) {
        r.message = "this receiver keeps no outcome records";
        return r;
    }
    OutcomeLookup l = store->resolve_for_query(id);
    const std::string rec = "record " + store->path_of(id);
    switch (l.kind) {
    case OutcomeLookup::missing:
        r.message = "no " + rec + " (never received here, pruned, or lost with the disk)";
        return r;
    case OutcomeLookup::expired:
        r.message = rec + " expired (kept " + std::to_string(store->keep().count()) + " s)";
        return r;
    case OutcomeLookup::corrupt:
        r.message = "unreadable " + l.why;
        return r;
    case OutcomeLookup::found: break;
    }
    switch (l.entry.state) {
    case OutcomeState::pending: // resolve_for_query destroyed it: the source may resume
    case OutcomeState::destroyed:
        r.answer = wire::OutcomeAnswer::not_committed;
        r.message = l.entry.domain + " never ran here and never will (COMMIT did not arrive before the "
                                     "migration was given up; the copy is destroyed)";
        return r;
    case OutcomeState::committed:
        r.message = "COMMIT arrived and " + l.entry.domain + " was being started when the receiver stopped, "
                    "before it confirmed the start: check whether " + l.entry.domain + " runs on the destination";
        return r;
    case OutcomeState::started:
        r.answer = wire::OutcomeAnswer::committed;
        r.verify_digest = l.entry.verify_digest;
        r.message = l.entry.domain + " runs here";
        return r;
    }
    return r;
}

std::string default_outcome_dir()
{
    if (const char* e = std::getenv("FASTMIG_OUTCOME_DIR"); e && *e)
        return e;
    if (::geteuid() == 0)
        return "/var/lib/fastmig/outcomes";
    if (const char* x = std::getenv("XDG_STATE_HOME"); x && *x)
        return std::string(x) + "/fastmig/outcomes";
    const char* home = std::getenv("HOME");
    return std::string(home && *home ? home : "/tmp") + "/.local/state/fastmig/outcomes";
}

} // namespace fastmig
