// A fake libxl end for the libxl-save-helper tests: spawns the helper the way
// libxl 4.17 does (libxl_save_callout.c run_helper: stdin/stdout pipes, the
// stream fd and back-channel fd passed by number with close-on-exec
// cleared), decodes every message independently of the helper's own
// encoder (the layout of libxl_save_msgs_gen.pl, checked byte by byte),
// answers the callbacks, and prints one transcript line per message.
//
// It also plays libxl's own stream around the helper's part: a prefix
// written before the save helper runs and a suffix after it completes; the
// restore side reads the prefix itself, runs the helper, then must find the
// suffix intact right after it (a helper that reads past its END breaks it).
//
// Exit status: 0 when every message was well formed and in order (whatever
// the helper's retval), 1 on any protocol violation (printed), 2 on usage.
#include "stream/domain/sim/sim.hpp"
#include "tests/libxl-helper/read_exact.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

const char kPrefix[] = "LIBXL-PREFIX-RECORDS-0123456789\n"; // 32 bytes
const char kSuffix[] = "LIBXL-SUFFIX: EMULATOR_XENSTORE_DATA, END\n";

[[noreturn]] void die(const std::string& m)
{
    std::printf("PROTOCOL ERROR: %s\n", m.c_str());
    std::fflush(stdout);
    std::exit(1);
}

struct Opts {
    std::string helper;
    std::string mode;
    std::string io;
    unsigned domid = 5, rdomid = 6;
    unsigned xcflags = 1;
    unsigned save_cbflags = 136, restore_cbflags = 768;
    unsigned stream_type = 0;
    int suspend_reply = 1;
    int qemu_reply = 0; // switch_qemu_logdirty: 0 done, -1 failed (libxl_dom_save.c)
    int static_reply = 0;
    int pause_on_suspend = -1; // sim id
    int check_running = -1;    // sim id that must run when suspend arrives
    int term_save_after = -1;  // progress messages from save before SIGTERM to save
    int term_restore_after = -1; // progress messages from save before SIGTERM to restore
    bool term_at_suspend = false; // abort like libxl while the suspend callback is pending
    bool framing = true;
    std::string io_kind = "file"; // restore: how the image reaches the helper (file, pipe, socket)
    int feed_chunk = 0;            // pipe/socket: the first 64 bytes in writes of this size, 20 ms apart
};

struct Helper {
    std::string who;
    bool save = true;
    unsigned cbflags = 0;
    pid_t pid = -1;
    int to = -1, from = -1; // our ends: its stdin, its stdout
    bool completed = false, results = false, eof = false;
    int retval = 0, status = -1;
    int progress = 0, suspends = 0;
    int io = -1; // pair mode: our copy of this side's stream fd
    pid_t worker = -1; // the helper's worker process (its "starting" log line)
};

std::string str_arg(const std::vector<std::uint8_t>& b, std::size_t& off, const Helper& h, const char* what)
{
    if (b.size() - off < 4)
        die(h.who + ": " + what + ": no room for a STRING length");
    std::uint32_t len;
    std::memcpy(&len, b.data() + off, 4);
    off += 4;
    if (len == 0 || b.size() - off < len)
        die(h.who + ": " + what + ": STRING length " + std::to_string(len) + " invalid");
    if (b[off + len - 1] != 0)
        die(h.who + ": " + what + ": STRING not NUL-terminated");
    if (std::memchr(b.data() + off, 0, len - 1))
        die(h.who + ": " + what + ": STRING with an inner NUL");
    std::string s(reinterpret_cast<const char*>(b.data() + off), len - 1);
    off += len;
    return s;
}

template <class T> T num_arg(const std::vector<std::uint8_t>& b, std::size_t& off, const Helper& h, const char* what)
{
    if (b.size() - off < sizeof(T))
        die(h.who + ": " + what + ": truncated");
    T v;
    std::memcpy(&v, b.data() + off, sizeof v);
    off += sizeof v;
    return v;
}

void reply(Helper& h, int v)
{
    if (::write(h.to, &v, sizeof v) != sizeof v)
        die(h.who + ": cannot write a reply: " + std::strerror(errno));
}

void spawn(Helper& h, const Opts& o, const std::vector<std::string>& args, int io_fd, int back_fd)
{
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) || ::pipe2(out, O_CLOEXEC))
        die("pipe");
    std::fflush(stdout);
    h.pid = ::fork();
    if (h.pid == 0) {
        // As libxl: dup the fds above 2 and clear close-on-exec, then the
        // pipes become stdin/stdout.  For a save, libxl's recv_fd of a plain
        // stream is 0 (never set), which it dups like any other fd.
        int s = ::fcntl(io_fd, F_DUPFD, 10);
        int b = back_fd >= 0 ? ::fcntl(back_fd, F_DUPFD, 10) : -1;
        if (h.save)
            b = ::fcntl(0, F_DUPFD, 10);
        std::vector<std::string> a = {o.helper, h.save ? "--save-domain" : "--restore-domain", std::to_string(s),
                                      std::to_string(b)};
        a.insert(a.end(), args.begin(), args.end());
        std::string line = h.who + ": argv";
        for (std::size_t i = 1; i < a.size(); ++i)
            line += " " + a[i];
        line += "\n"; // write(2): this child's copy of stdio's buffer is the parent's
        if (::write(1, line.data(), line.size()) < 0)
            ::_exit(127);
        ::dup2(in[0], 0);
        ::dup2(out[1], 1);
        std::vector<char*> av;
        for (auto& x : a)
            av.push_back(const_cast<char*>(x.c_str()));
        av.push_back(nullptr);
        ::execv(o.helper.c_str(), av.data());
        std::perror("exec helper");
        ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    h.to = in[1];
    h.from = out[0];
}

// Handles one message; returns false at EOF.
bool handle(Helper& h, const Opts& o, Helper* other)
{
    std::uint16_t len;
    if (!read_exact(h.from, &len, 2)) {
        h.eof = true; // EOF before complete: finish() says so
        return false;
    }
    std::vector<std::uint8_t> b(len);
    if (len < 2 || !read_exact(h.from, b.data(), len))
        die(h.who + ": truncated message of length " + std::to_string(len));
    std::size_t off = 0;
    auto type = num_arg<std::uint16_t>(b, off, h, "type");
    // Which messages each side may send (flags 's'/'r'), and callbacks only
    // when libxl provided them (the 'x' flag: bit 1 << number in cbflags).
    static const std::map<unsigned, std::string> names = {
        {1, "log"}, {2, "progress"}, {3, "suspend"}, {4, "postcopy"}, {5, "checkpoint"},
        {6, "wait_checkpoint"}, {7, "switch_qemu_logdirty"}, {8, "static_data_done"}, {9, "restore_results"},
        {10, "complete"}};
    if (!names.count(type))
        die(h.who + ": unknown message type " + std::to_string(type));
    if ((h.save && (type == 8 || type == 9)) || (!h.save && type == 7))
        die(h.who + ": message " + names.at(type) + " is not for this direction");
    if (type >= 3 && type <= 9 && !(h.cbflags & (1u << type)))
        die(h.who + ": callback " + names.at(type) + " not provided by libxl (cbflags " + std::to_string(h.cbflags) + ")");
    std::string line = h.who + ": " + names.at(type);
    switch (type) {
    case 1: {
        auto level = num_arg<std::uint32_t>(b, off, h, "level");
        auto err = num_arg<std::uint32_t>(b, off, h, "errnoval");
        auto ctx = str_arg(b, off, h, "context");
        auto text = str_arg(b, off, h, "formatted");
        if (level < 1 || level > 9)
            die(h.who + ": log level " + std::to_string(level));
        line += " level=" + std::to_string(level) + " errno=" + std::to_string(std::int32_t(err)) + " context=" + ctx + " text=" + text;
        if (auto at = text.find("worker pid "); at != std::string::npos)
            h.worker = pid_t(std::atoi(text.c_str() + at + 11));
        break;
    }
    case 2: {
        auto ctx = str_arg(b, off, h, "context");
        auto what = str_arg(b, off, h, "doing_what");
        auto done = num_arg<unsigned long>(b, off, h, "done");
        auto total = num_arg<unsigned long>(b, off, h, "total");
        if (done > total)
            die(h.who + ": progress done > total");
        line += " context=" + ctx + " what=" + what + " done=" + std::to_string(done) + " total=" + std::to_string(total);
        ++h.progress;
        break;
    }
    case 3: case 4: case 5: case 6:
        break;
    case 7: {
        auto d = num_arg<std::uint32_t>(b, off, h, "domid");
        auto e = num_arg<unsigned>(b, off, h, "enable");
        line += " domid=" + std::to_string(d) + " enable=" + std::to_string(e) + " reply=" + std::to_string(o.qemu_reply);
        break;
    }
    case 8:
        line += " missing=" + std::to_string(num_arg<unsigned>(b, off, h, "missing"));
        break;
    case 9: {
        auto s = num_arg<unsigned long>(b, off, h, "store_gfn");
        auto c = num_arg<unsigned long>(b, off, h, "console_gfn");
        line += " store_gfn=" + std::to_string(s) + " console_gfn=" + std::to_string(c);
        h.results = true;
        break;
    }
    case 10: {
        h.retval = num_arg<int>(b, off, h, "retval");
        auto e = num_arg<int>(b, off, h, "errnoval");
        line += " retval=" + std::to_string(h.retval) + " errno=" + std::to_string(e);
        if (!h.save && !h.results)
            die(h.who + ": complete without restore_results first");
        h.completed = true;
        break;
    }
    }
    if (off != b.size())
        die(h.who + ": " + names.at(type) + ": " + std::to_string(b.size() - off) + " bytes left over");
    if (type == 3) {
        ++h.suspends;
        if (o.check_running >= 0) {
            auto st = fastmig::sim::domain_info(o.check_running).state;
            line += " guest=" + st;
        }
        if (o.pause_on_suspend >= 0)
            fastmig::sim::attach(o.pause_on_suspend)->suspend(std::chrono::seconds(10));
        if (o.term_at_suspend) {
            // libxl aborting mid-callback: SIGTERM, and no answer ever.
            ::kill(h.pid, SIGTERM);
            line += " SIGTERM sent, no reply";
        } else {
            line += " reply=" + std::to_string(o.suspend_reply);
        }
    }
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    // Replies: 'W'/'A' messages (suspend..static_data_done, complete).
    if (type == 3 && !o.term_at_suspend)
        reply(h, o.suspend_reply);
    else if (type >= 4 && type <= 6)
        reply(h, 0);
    else if (type == 7)
        reply(h, o.qemu_reply);
    else if (type == 8)
        reply(h, o.static_reply);
    else if (type == 10)
        reply(h, 0);
    // As libxl (libxl__srm_callout_callback_complete): nothing is read after
    // complete; what counts from here is the helper's exit.
    if (type == 10)
        return false;
    if (type == 2 && h.save) {
        if (h.progress == o.term_save_after)
            ::kill(h.pid, SIGTERM), std::printf("%s: SIGTERM sent\n", h.who.c_str());
        if (other && h.progress == o.term_restore_after)
            ::kill(other->pid, SIGTERM), std::printf("%s: SIGTERM sent\n", other->who.c_str());
    }
    return true;
}

// The helper's worker outlives the process libxl waits for, to tear down
// after libxl has moved on (helper_supervisor.hpp).  Say whether it was
// still there at the helper's exit, then wait for it (bounded): the next
// test step must not find its domain still attached.
bool process_gone(pid_t pid)
{
    if (::kill(pid, 0) < 0)
        return errno == ESRCH;
    char path[64], buf[256] = {};
    std::snprintf(path, sizeof path, "/proc/%d/stat", int(pid));
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true;
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    const char* paren = n > 0 ? std::strrchr(buf, ')') : nullptr;
    return paren && paren[1] == ' ' && paren[2] == 'Z'; // a zombie has finished
}

void wait_worker(const Helper& h)
{
    std::printf("%s: worker %s after exit\n", h.who.c_str(), process_gone(h.worker) ? "gone" : "alive");
    for (int i = 0; i < 6000 && !process_gone(h.worker); ++i)
        ::usleep(10000);
    if (!process_gone(h.worker))
        die(h.who + ": the helper's worker " + std::to_string(h.worker) + " still runs 60 s after the helper's exit");
    std::printf("%s: worker finished\n", h.who.c_str());
    std::fflush(stdout);
}

void finish(Helper& h)
{
    ::close(h.to);
    int st = 0;
    ::waitpid(h.pid, &st, 0);
    h.status = st;
    if (WIFEXITED(st))
        std::printf("%s: exit %d\n", h.who.c_str(), WEXITSTATUS(st));
    else
        std::printf("%s: killed by signal %d\n", h.who.c_str(), WTERMSIG(st));
    if (!h.completed)
        die(h.who + ": exited without complete");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die(h.who + ": exit status not 0 after complete");
    if (h.worker > 0)
        wait_worker(h);
    // Everyone holding the helper's stdout is gone now: anything left in the
    // pipe was written after complete, which libxl never reads.
    char c;
    if (!h.eof && ::read(h.from, &c, 1) != 0)
        die(h.who + ": a message after complete");
    ::close(h.from);
}

void run(std::vector<Helper*> hs, const Opts& o)
{
    while (true) {
        std::vector<pollfd> p;
        std::vector<Helper*> live;
        for (auto* h : hs)
            if (!h->eof) {
                p.push_back({h->from, POLLIN, 0});
                live.push_back(h);
            }
        if (p.empty())
            return;
        if (::poll(p.data(), p.size(), 120000) <= 0)
            die("no message from the helpers for 120 s");
        for (std::size_t i = 0; i < p.size(); ++i)
            if (p[i].revents) {
                Helper* other = hs.size() > 1 ? (live[i] == hs[0] ? hs[1] : hs[0]) : nullptr;
                if (!handle(*live[i], o, other)) {
                    finish(*live[i]);
                    live[i]->eof = true;
                    // A failed save or restore makes xl (migrate or
                    // migrate-receive) exit, which closes its end of the
                    // stream: the other side sees it at once.
                    if (live[i]->retval != 0 && live[i]->io >= 0) {
                        ::close(live[i]->io);
                        live[i]->io = -1;
                    }
                }
            }
    }
}

void write_all(int fd, const void* d, std::size_t n)
{
    if (::write(fd, d, n) != ssize_t(n))
        die(std::string("writing libxl's records: ") + std::strerror(errno));
}

void check_suffix(int fd)
{
    char buf[sizeof kSuffix - 1];
    if (!read_exact(fd, buf, sizeof buf) || std::memcmp(buf, kSuffix, sizeof buf) != 0)
        die("restore: libxl's records after the helper's part are not intact (the helper read past its END)");
    std::printf("restore: libxl suffix intact\n");
}

// xl migrate-receive's stream is a pipe or a socket from ssh: a child
// copies the image into one (the first bytes in small pieces when asked,
// as a slow link would deliver them) and the read end replaces `file`.
int feed(int file, const Opts& o)
{
    int ends[2];
    if (o.io_kind == "pipe" ? ::pipe2(ends, O_CLOEXEC) != 0
                            : ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0)
        die("restore: cannot make the " + o.io_kind);
    if (o.io_kind != "pipe" && o.io_kind != "socket")
        die("--io-kind " + o.io_kind + ": file, pipe or socket");
    pid_t pid = ::fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        ::close(ends[0]);
        std::vector<char> buf(1 << 16);
        std::size_t sent = 0;
        ssize_t n;
        while ((n = ::read(file, buf.data(), buf.size())) > 0) {
            for (ssize_t off = 0; off < n;) {
                std::size_t step = std::size_t(n - off);
                if (o.feed_chunk > 0 && sent < 64) {
                    step = std::min<std::size_t>(step, std::size_t(o.feed_chunk));
                    ::usleep(20000);
                }
                ssize_t w = ::write(ends[1], buf.data() + off, step);
                if (w <= 0)
                    ::_exit(0); // the reader is gone: nothing more to feed
                off += w;
                sent += std::size_t(w);
            }
        }
        ::_exit(0);
    }
    ::close(ends[1]);
    ::close(file);
    return ends[0];
}

std::vector<std::string> save_args(const Opts& o)
{
    return {std::to_string(o.domid), std::to_string(o.xcflags), std::to_string(o.save_cbflags),
            std::to_string(o.stream_type)};
}
std::vector<std::string> restore_args(const Opts& o)
{
    return {std::to_string(o.rdomid), "1", "0", "2", "0", std::to_string(o.restore_cbflags),
            std::to_string(o.stream_type)};
}

} // namespace

int main(int argc, char** argv)
{
    std::signal(SIGPIPE, SIG_IGN);
    Opts o;
    // `fake_libxl migrate [xl migrate's options] DOMAIN HOST`: a command
    // line like xl's, which the save helper reads from /proc to learn the
    // destination; fake_libxl's own options then come from FAKE_LIBXL_ARGS.
    std::vector<std::string> words(argv + 1, argv + argc);
    if (argc > 1 && std::string(argv[1]) == "migrate") {
        words.clear();
        std::string w;
        for (const char* c = std::getenv("FAKE_LIBXL_ARGS"); c && *c; ++c) {
            if (*c != ' ')
                w += *c;
            if ((*c == ' ' || !c[1]) && !w.empty())
                words.push_back(w), w.clear();
        }
    }
    for (int i = 0; i < int(words.size()); ++i) {
        std::string a = words[std::size_t(i)];
        auto val = [&]() -> std::string {
            if (i + 1 >= int(words.size())) {
                std::fprintf(stderr, "fake_libxl: %s needs a value\n", a.c_str());
                std::exit(2);
            }
            return words[std::size_t(++i)];
        };
        auto sim_id = [&](const std::string& s) { return std::atoi(s.rfind("sim:", 0) == 0 ? s.c_str() + 4 : s.c_str()); };
        if (a == "--helper") o.helper = val();
        else if (a == "--io") o.io = val();
        else if (a == "--domid") o.domid = unsigned(std::atoi(val().c_str()));
        else if (a == "--rdomid") o.rdomid = unsigned(std::atoi(val().c_str()));
        else if (a == "--xcflags") o.xcflags = unsigned(std::atoi(val().c_str()));
        else if (a == "--save-cbflags") o.save_cbflags = unsigned(std::atoi(val().c_str()));
        else if (a == "--restore-cbflags") o.restore_cbflags = unsigned(std::atoi(val().c_str()));
        else if (a == "--stream-type") o.stream_type = unsigned(std::atoi(val().c_str()));
        else if (a == "--suspend-reply") o.suspend_reply = std::atoi(val().c_str());
        else if (a == "--qemu-reply") o.qemu_reply = std::atoi(val().c_str());
        else if (a == "--static-reply") o.static_reply = std::atoi(val().c_str());
        else if (a == "--pause-on-suspend") o.pause_on_suspend = sim_id(val());
        else if (a == "--check-running") o.check_running = sim_id(val());
        else if (a == "--term-save-after") o.term_save_after = std::atoi(val().c_str());
        else if (a == "--term-restore-after") o.term_restore_after = std::atoi(val().c_str());
        else if (a == "--no-framing") o.framing = false;
        else if (a == "--io-kind") o.io_kind = val();
        else if (a == "--feed-chunk") o.feed_chunk = std::atoi(val().c_str());
        else if (a == "--term-at-suspend") o.term_at_suspend = true;
        else if (a == "save" || a == "restore" || a == "pair") o.mode = a;
        else {
            std::fprintf(stderr, "fake_libxl: unknown argument %s\n", a.c_str());
            return 2;
        }
    }
    if (o.helper.empty() || o.mode.empty() || (o.mode != "pair" && o.io.empty())) {
        std::fprintf(stderr, "usage: fake_libxl --helper PATH [options] save|restore|pair (save/restore: --io FILE)\n");
        return 2;
    }
    Helper s, r;
    s.who = "save";
    s.save = true;
    s.cbflags = o.save_cbflags;
    r.who = "restore";
    r.save = false;
    r.cbflags = o.restore_cbflags;
    if (o.mode == "save") {
        int fd = ::open(o.io.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            die("open " + o.io);
        if (o.framing)
            write_all(fd, kPrefix, sizeof kPrefix - 1);
        spawn(s, o, save_args(o), fd, -1);
        run({&s}, o);
        if (o.framing && s.retval == 0)
            write_all(fd, kSuffix, sizeof kSuffix - 1);
        ::close(fd);
        return 0;
    }
    if (o.mode == "restore") {
        int fd = ::open(o.io.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            die("open " + o.io);
        if (o.io_kind != "file")
            fd = feed(fd, o);
        char pre[sizeof kPrefix - 1];
        if (o.framing && (!read_exact(fd, pre, sizeof pre) || std::memcmp(pre, kPrefix, sizeof pre) != 0))
            die("restore: the image does not start with libxl's prefix");
        spawn(r, o, restore_args(o), fd, -1); // xl restore: send_back_fd -1
        run({&r}, o);
        if (o.framing && r.retval == 0)
            check_suffix(fd);
        ::close(fd);
        return 0;
    }
    // pair: xl migrate in one process.  The stream is a socketpair; the
    // restore helper gets a back channel (xl migrate-receive's stdout in real
    // life) which must stay silent: xl reads its own messages there.
    int sv[2], back[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) || ::pipe2(back, O_CLOEXEC | O_NONBLOCK))
        die("socketpair");
    if (o.framing)
        write_all(sv[0], kPrefix, sizeof kPrefix - 1);
    char pre[sizeof kPrefix - 1];
    if (o.framing && (!read_exact(sv[1], pre, sizeof pre) || std::memcmp(pre, kPrefix, sizeof pre) != 0))
        die("pair: prefix lost");
    spawn(s, o, save_args(o), sv[0], -1);
    spawn(r, o, restore_args(o), sv[1], back[1]);
    r.io = sv[1];
    s.io = sv[0];
    ::close(back[1]);
    run({&s, &r}, o);
    if (o.framing && s.retval == 0 && s.io >= 0)
        write_all(sv[0], kSuffix, sizeof kSuffix - 1);
    if (o.framing && r.retval == 0 && r.io >= 0)
        check_suffix(sv[1]);
    char c;
    if (::read(back[0], &c, 1) == 1)
        die("restore: the helper wrote on the back channel (xl's own message channel)");
    return 0;
}
