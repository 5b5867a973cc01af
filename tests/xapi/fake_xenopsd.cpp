// A fake xenopsd for the fastmig-emu-manager tests (no Xen, sim domains):
// runs an emu-manager as xenopsd does (ocaml/xenopsd/xc/emu_manager.ml
// `connect`: two pipes and the stream fd passed by number), writes and reads
// the suspend image's framing itself (XenSavedDomv2 signature, Xenops
// record, Libxc header, then after the body a Qemu record and End), answers
// the control lines, and prints one transcript line per event.
//
//   fake_xenopsd --emu PATH save    --domid SIM --out FILE [--live] [--pv] [--dm DM]
//                [--no-done prepare|suspend] [--abort-after-info N]
//   fake_xenopsd --emu PATH restore --in FILE [--pv]
//   fake_xenopsd --emu PATH migrate --domid SIM [--live] [--corrupt-at N] [--cut-at N] ...
//   fake_xenopsd stock-image FILE      (an image whose body is a stock libxc stream)
//
// What xenopsd does to the guests themselves (suspend them, build the
// restore's domain, introduce it, destroy the source) is a Host: sim
// guests here; fake_xenopsd_xen (the same source with xen_host.cpp, built
// with the Xen libraries, for the nested-Xen harness) does it on real Xen
// domains as xenopsd's domain.ml does.
//
// migrate joins the two sides through socketpairs and a relay that can flip
// a byte (--corrupt-at) or end the stream (--cut-at) at an offset of the
// whole image.  The restore side checks that the Qemu record after the
// body comes back byte for byte: an emu-manager that reads past its END
// breaks it.  Exit status: 0 when every message was well formed and in
// order (whatever the emu-manager's result), 1 on a protocol violation.
#include "tests/xapi/fake_xenopsd_host.hpp"

#include "stream/domain/sim/sim.hpp"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

constexpr char kSignature[] = "XenSavedDomv2-\n"; // 15 bytes
constexpr std::uint64_t kXenops = 0x000f, kLibxc = 0x00f0, kQemu = 0x0f00, kEnd = 0xffff;
constexpr std::size_t kQemuLen = 4099; // not a multiple of 8 on purpose
const std::string kXenopsBody = "((time 1765000000.)(word_size 64))";

std::mutex out_mutex;
std::atomic<bool> violated{false};

void say(const std::string& who, const std::string& line)
{
    std::lock_guard lk(out_mutex);
    std::printf("%s: %s\n", who.c_str(), line.c_str());
    std::fflush(stdout);
}

void violation(const std::string& who, const std::string& what)
{
    say(who, "PROTOCOL ERROR: " + what);
    violated = true;
}

using fastmig::fake_xenopsd::Host;
using fastmig::fake_xenopsd::Opts;

std::unique_ptr<Host> host;
int restored_domid = -1; // the restore's domain, built and introduced (Xen: unpaused once the source is gone)

#ifndef FAKE_XENOPSD_XEN
// Sim guests: `suspend:` suspends the sim guest; the restore builds a new
// incoming sim guest by itself (the domid on argv is a label).
class SimHost : public Host {
public:
    std::string suspend(int domid, bool answer) override
    {
        // The stock path's guest (PV, vGPU) is not a sim guest.
        std::string state = "not a sim guest";
        bool sim = false;
        try {
            state = fastmig::sim::domain_info(domid).state;
            sim = true;
        } catch (const std::exception&) {
        }
        if (answer && sim)
            fastmig::sim::attach(domid)->suspend(std::chrono::seconds(10));
        return state;
    }
    Built build_pre(const Opts& o) override { return {o.rdomid, 11, 12}; }
};
#endif

void write_all(int fd, const void* p, std::size_t n)
{
    auto* b = static_cast<const std::uint8_t*>(p);
    while (n) {
        ssize_t w = ::write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            throw std::runtime_error(std::string("write: ") + std::strerror(errno));
        b += w;
        n -= std::size_t(w);
    }
}

// false on EOF before n bytes.
bool read_exact(int fd, void* p, std::size_t n)
{
    auto* b = static_cast<std::uint8_t*>(p);
    while (n) {
        ssize_t r = ::read(fd, b, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        b += r;
        n -= std::size_t(r);
    }
    return true;
}

void header(int fd, std::uint64_t type, std::uint64_t len)
{
    std::uint64_t h[2] = {type, len}; // little-endian host
    write_all(fd, h, sizeof h);
}

std::vector<std::uint8_t> qemu_record()
{
    std::vector<std::uint8_t> q(kQemuLen);
    for (std::size_t i = 0; i < q.size(); ++i)
        q[i] = std::uint8_t(i * 7 + 3);
    std::memcpy(q.data(), "QEVM", 4);
    return q;
}

void image_prefix(int fd)
{
    write_all(fd, kSignature, 15);
    header(fd, kXenops, kXenopsBody.size());
    write_all(fd, kXenopsBody.data(), kXenopsBody.size());
}

void image_suffix(int fd)
{
    auto q = qemu_record();
    header(fd, kQemu, q.size());
    write_all(fd, q.data(), q.size());
    header(fd, kEnd, 0);
}

struct Emu {
    pid_t pid = -1;
    int to = -1, from = -1; // our ends of its control pipes
    std::string pending;    // bytes read past the last line
};

Emu spawn(const Opts& o, int stream_fd, std::vector<std::string> args)
{
    int to[2], from[2];
    if (::pipe2(to, O_CLOEXEC) < 0 || ::pipe2(from, O_CLOEXEC) < 0)
        throw std::runtime_error("pipe2");
    std::vector<std::string> argv = {o.emu, "-controloutfd", std::to_string(from[1]), "-controlinfd",
                                     std::to_string(to[0]), "-fd", std::to_string(stream_fd)};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_t pid = ::fork();
    if (pid == 0) {
        for (int fd : {from[1], to[0], stream_fd})
            ::fcntl(fd, F_SETFD, 0);
        std::vector<char*> av;
        for (auto& s : argv)
            av.push_back(s.data());
        av.push_back(nullptr);
        ::execv(av[0], av.data());
        // Say why: an exit 127 alone once hid the cause of a failure under load.
        std::string why = "fake_xenopsd: exec " + argv[0] + ": " + std::strerror(errno) + "\n";
        (void)!::write(2, why.data(), why.size());
        std::_Exit(127);
    }
    ::close(from[1]);
    ::close(to[0]);
    return Emu{pid, to[1], from[0], {}};
}

// The next line from the emu-manager ("" and false at EOF).
bool next_line(Emu& e, std::string& line, const std::string& who)
{
    for (;;) {
        auto nl = e.pending.find('\n');
        if (nl != std::string::npos) {
            line = e.pending.substr(0, nl);
            e.pending.erase(0, nl + 1);
            if (line.size() + 1 > 128)
                violation(who, "control line of " + std::to_string(line.size() + 1) + " bytes (max 128)");
            return true;
        }
        char buf[512];
        ssize_t n = ::read(e.from, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (!e.pending.empty())
                violation(who, "unterminated line '" + e.pending + "'");
            return false;
        }
        e.pending.append(buf, std::size_t(n));
    }
}

void send(Emu& e, const std::string& line) { write_all(e.to, (line + "\n").data(), line.size() + 1); }

int finish(Emu& e, const std::string& who)
{
    if (e.to >= 0)
        ::close(e.to);
    ::close(e.from);
    int st = 0;
    ::waitpid(e.pid, &st, 0);
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    say(who, "exit " + std::to_string(code));
    return code;
}

// `info:\b\b\b\bN` lines (the \b are two characters each): N in 0..100,
// rising.  xenopsd parses them on save; the fake checks them on restore too.
struct ProgressLines {
    int lines = 0, last = -1;
    // False (and a violation) for a malformed line.
    bool take(const std::string& line, const std::string& who)
    {
        const std::string pre = "info:\\b\\b\\b\\b";
        std::string n = line.rfind(pre, 0) == 0 ? line.substr(pre.size()) : "";
        if (n.empty() || n.size() > 3 || n.find_first_not_of("0123456789") != std::string::npos || std::stoi(n) > 100) {
            violation(who, "malformed progress '" + line + "'");
            return false;
        }
        if (std::stoi(n) <= last)
            violation(who, "progress went from " + std::to_string(last) + " to " + n);
        last = std::stoi(n);
        say(who, "info " + n);
        ++lines;
        return true;
    }
};

// xenopsd's Domain.suspend around suspend_emu_manager.
void save_side(const Opts& o, int fd, const std::string& who)
{
    image_prefix(fd);
    std::vector<std::string> args = {"-mode", o.pv ? "save" : "hvm_save", "-domid", std::to_string(o.domid)};
    if (o.live)
        args.insert(args.end(), {"-live", "true"});
    if (!o.dm.empty())
        args.insert(args.end(), {"-dm", o.dm});
    Emu e = spawn(o, fd, args);
    bool prepared = false, suspended = false, result = false;
    ProgressLines progress;
    std::string line;
    while (next_line(e, line, who)) {
        if (line.rfind("info:", 0) == 0) {
            if (!progress.take(line, who))
                continue;
            if (progress.lines == o.abort_after_info) {
                say(who, "sending abort");
                send(e, "abort");
            }
        } else if (line == "prepare:xenguest") {
            if (prepared)
                violation(who, "prepare:xenguest twice");
            prepared = true;
            if (o.no_done == "prepare") {
                say(who, "prepare:xenguest (not answering)");
                continue;
            }
            header(fd, kLibxc, 0);
            say(who, "prepare:xenguest -> Libxc header written, done");
            send(e, "done");
        } else if (line == "suspend:") {
            if (suspended)
                violation(who, "suspend: twice");
            suspended = true;
            const bool answer = o.no_done != "suspend";
            std::string state = host->suspend(o.domid, answer);
            if (!answer) {
                say(who, "suspend: guest=" + state + " (not answering)");
                continue;
            }
            say(who, "suspend: guest=" + state + " -> suspended, done");
            send(e, "done");
        } else if (line.rfind("result:", 0) == 0) {
            if (line != "result:0 0")
                violation(who, "save result '" + line + "', expected 'result:0 0'");
            if (!prepared || !suspended)
                violation(who, "result before prepare:xenguest and suspend:");
            result = true;
            image_suffix(fd);
            say(who, line + " -> Qemu record and End written");
        } else if (line.rfind("error:", 0) == 0) {
            say(who, line);
        } else {
            violation(who, "unknown line '" + line + "'");
        }
    }
    ::close(fd);
    say(who, std::string(result ? "saved" : "not saved") + ", " + std::to_string(progress.lines) + " progress lines");
    finish(e, who);
}

// xenopsd's Domain.restore_common: reads the framing itself, hands the body
// to the emu-manager, then reads on.
void restore_side(const Opts& o, int fd, const std::string& who)
{
    Host::Built b;
    try {
        b = host->build_pre(o);
    } catch (const std::exception& ex) {
        violation(who, std::string("build_pre: ") + ex.what());
        ::close(fd); // the source sees the stream end
        return;
    }
    if (!b.note.empty())
        say(who, "build_pre: " + b.note);
    Emu e = spawn(o, fd,
                  {"-mode", o.pv ? "restore" : "hvm_restore", "-domid", std::to_string(b.domid), "-store_port",
                   std::to_string(b.store_port), "-console_port", std::to_string(b.console_port)});
    bool built = false;
    ProgressLines progress;
    char sig[15];
    bool ok = read_exact(fd, sig, 15) && std::memcmp(sig, kSignature, 15) == 0;
    if (!ok)
        violation(who, "no XenSavedDomv2 signature");
    while (ok) {
        std::uint64_t h[2];
        if (!read_exact(fd, h, sizeof h)) {
            say(who, "the stream ended before End");
            break;
        }
        if (h[0] == kXenops) {
            std::string body(h[1], '\0');
            if (h[1] > 4096 || !read_exact(fd, body.data(), body.size()) || body != kXenopsBody) {
                violation(who, "bad Xenops record");
                break;
            }
            say(who, "Xenops record read");
        } else if (h[0] == kLibxc) {
            say(who, "Libxc header read, sending restore:xenguest");
            send(e, "restore:xenguest");
            std::string line;
            bool got = false;
            while (!got && next_line(e, line, who)) {
                if (line.rfind("result:xenguest ", 0) == 0) {
                    unsigned long long s, c;
                    char extra;
                    if (std::sscanf(line.c_str(), "result:xenguest %llu %llu%c", &s, &c, &extra) != 2)
                        violation(who, "malformed '" + line + "'");
                    say(who, line + " after " + std::to_string(progress.lines) + " progress lines, the last " +
                                 std::to_string(progress.last));
                    got = true;
                    try {
                        host->build_post(b, s, c);
                        built = true;
                    } catch (const std::exception& ex) {
                        violation(who, std::string("build_post: ") + ex.what());
                    }
                } else if (line.rfind("error:", 0) == 0) {
                    say(who, line);
                    break;
                } else if (line.rfind("info:", 0) == 0) {
                    progress.take(line, who);
                } else {
                    violation(who, "unexpected line '" + line + "' during the restore");
                }
            }
            if (!got)
                break;
        } else if (h[0] == kQemu) {
            std::vector<std::uint8_t> q(std::min<std::uint64_t>(h[1], 1 << 20));
            if (h[1] != kQemuLen || !read_exact(fd, q.data(), q.size()) || q != qemu_record()) {
                say(who, "QEMU RECORD DAMAGED (length " + std::to_string(h[1]) + ")");
                break;
            }
            say(who, "Qemu record intact");
        } else if (h[0] == kEnd) {
            say(who, "End read");
            break;
        } else {
            say(who, "UNKNOWN HEADER type " + std::to_string(h[0]) + " (the emu-manager read too much or too little)");
            break;
        }
    }
    ::close(fd);
    if (finish(e, who) == 0 && built)
        restored_domid = int(b.domid);
    else {
        if (auto d = host->describe_failed(b); !d.empty())
            say(who, "after the failure: " + d);
        host->restore_failed(b);
    }
}

// The stream between the hosts: copies, flips a byte at corrupt_at, ends at cut_at.
void relay(int in, int out, long long corrupt_at, long long cut_at)
{
    long long off = 0;
    std::vector<std::uint8_t> buf(65536);
    for (;;) {
        std::size_t want = buf.size();
        if (cut_at >= 0)
            want = std::size_t(std::min<long long>(want, cut_at - off));
        if (want == 0)
            break;
        ssize_t n = ::read(in, buf.data(), want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (corrupt_at >= off && corrupt_at < off + n)
            buf[std::size_t(corrupt_at - off)] ^= 0x55;
        off += n;
        try {
            write_all(out, buf.data(), std::size_t(n));
        } catch (...) {
            break; // the destination gave up
        }
    }
    ::close(in);
    ::close(out);
}

// A stock image: the body is a libxc stream (image header, domain header,
// one record, END), as xenguest's xc_domain_save would write it.
void stock_body(int fd)
{
    std::vector<std::uint8_t> b(8, 0xff);
    const std::uint8_t id_ver_opts[16] = {'X', 'E', 'N', 'F', 0, 0, 0, 3, 0, 1, 0, 0, 0, 0, 0, 0};
    b.insert(b.end(), id_ver_opts, id_ver_opts + 16);
    const std::uint8_t dhdr[16] = {3, 0, 0, 0, 12, 0, 0, 0, 4, 0, 0, 0, 17, 0, 0, 0}; // x86 HVM, 4.17
    b.insert(b.end(), dhdr, dhdr + 16);
    const std::uint8_t rec[8] = {0x0f, 0, 0, 0, 12, 0, 0, 0}; // a 12-byte record, padded to 16
    b.insert(b.end(), rec, rec + 8);
    for (int i = 0; i < 16; ++i)
        b.push_back(i < 12 ? std::uint8_t(0xa0 + i) : 0);
    const std::uint8_t end[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    b.insert(b.end(), end, end + 8);
    write_all(fd, b.data(), b.size());
}

[[noreturn]] void usage()
{
    std::fprintf(stderr, "usage: fake_xenopsd --emu PATH save|restore|migrate [options], or stock-image FILE\n"
                         "  (fake_xenopsd_xen, the restore's domain: --name N --memory-mib M --vcpus V --hap 0|1"
                         " --platform FILE)\n");
    std::exit(2);
}

} // namespace

int main(int argc, char** argv)
{
    Opts o;
    std::vector<std::string> a(argv + 1, argv + argc);
    for (std::size_t i = 0; i < a.size(); ++i) {
        auto val = [&]() -> std::string {
            if (i + 1 >= a.size())
                usage();
            return a[++i];
        };
        const std::string& s = a[i];
        if (s == "--emu") o.emu = val();
        else if (s == "--domid") {
            std::string v = val();
            o.domid = std::stoi(v.rfind("sim:", 0) == 0 ? v.substr(4) : v);
        }
        else if (s == "--out" || s == "--in") o.file = val();
        else if (s == "--live") o.live = true;
        else if (s == "--pv") o.pv = true;
        else if (s == "--dm") o.dm = val();
        else if (s == "--no-done") o.no_done = val();
        else if (s == "--abort-after-info") o.abort_after_info = std::stoi(val());
        else if (s == "--corrupt-at") o.corrupt_at = std::stoll(val());
        else if (s == "--cut-at") o.cut_at = std::stoll(val());
        else if (s == "save" || s == "restore" || s == "migrate") o.mode = s;
        else if (s == "stock-image") { o.mode = s; o.file = val(); }
        else if (s == "--name") o.name = val();
        else if (s == "--memory-mib") o.memory_mib = std::stoul(val());
        else if (s == "--vcpus") o.vcpus = std::stoul(val());
        else if (s == "--hap") o.hap = val() == "1";
        else if (s == "--platform") o.platform_file = val();
        else usage();
    }
    std::signal(SIGPIPE, SIG_IGN);
    try {
        if (o.mode == "stock-image") {
            int fd = ::open(o.file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            image_prefix(fd);
            header(fd, kLibxc, 0);
            stock_body(fd);
            image_suffix(fd);
            ::close(fd);
            return 0;
        }
        if (o.emu.empty() || o.mode.empty())
            usage();
#ifdef FAKE_XENOPSD_XEN
        host = fastmig::fake_xenopsd::make_xen_host();
#else
        host = std::make_unique<SimHost>();
#endif
        if (o.mode == "save") {
            // As xenopsd opens a suspend VDI: append-only.
            int fd = ::open(o.file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
            if (fd < 0)
                throw std::runtime_error("open " + o.file + ": " + std::strerror(errno));
            save_side(o, fd, "save");
        } else if (o.mode == "restore") {
            int fd = ::open(o.file.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                throw std::runtime_error("open " + o.file + ": " + std::strerror(errno));
            restore_side(o, fd, "restore");
            if (restored_domid >= 0)
                if (auto m = host->finish_restore(unsigned(restored_domid)); !m.empty())
                    say("restore", m);
        } else {
            int src[2], dst[2];
            if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, src) < 0 ||
                ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, dst) < 0)
                throw std::runtime_error("socketpair");
            std::thread r([&] { relay(src[1], dst[0], o.corrupt_at, o.cut_at); });
            std::thread d([&] { restore_side(o, dst[1], "restore"); });
            save_side(o, src[0], "save");
            d.join();
            r.join();
            // xenopsd's end of a migration: the destination runs, the
            // source goes (sim: the test does both).
            if (restored_domid >= 0)
                if (auto m = host->finish_migration(o.domid, unsigned(restored_domid)); !m.empty())
                    say("migrate", m);
        }
    } catch (const std::exception& e) {
        std::printf("FAKE XENOPSD FAILED: %s\n", e.what());
        return 1;
    }
    return violated ? 1 : 0;
}
