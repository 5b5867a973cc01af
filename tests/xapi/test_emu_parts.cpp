// fastmig-emu-manager's parts without a xenopsd: the argv parser (as
// getopt_long_only), peeking that leaves every byte in place, and the
// control-line channel (lines, bounds, the `done` wait, `abort`).
#define BOOST_TEST_MODULE emu_parts
#include <boost/test/unit_test.hpp>

#include "libxl-plugin/emu_args.hpp"
#include "libxl-plugin/emu_config.hpp"
#include "libxl-plugin/fd_peek.hpp"
#include "libxl-plugin/qmp_dirty_log.hpp"
#include "libxl-plugin/restore_progress.hpp"
#include "libxl-plugin/xenopsd_link.hpp"

#include "stream/transport.hpp"
#include "stream/types.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

using namespace fastmig::emu;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> words(const std::string& s)
{
    std::vector<std::string> w;
    std::size_t i = 0;
    while (i < s.size()) {
        auto j = s.find(' ', i);
        if (j == std::string::npos)
            j = s.size();
        if (j > i)
            w.push_back(s.substr(i, j - i));
        i = j + 1;
    }
    return w;
}

std::string read_some(int fd)
{
    char buf[512];
    ssize_t n = ::read(fd, buf, sizeof buf);
    return n > 0 ? std::string(buf, std::size_t(n)) : std::string();
}

bool any_byte(std::span<const std::uint8_t>) { return false; }

} // namespace

BOOST_AUTO_TEST_CASE(argv_as_xenopsd_writes_it)
{
    auto a = parse_emu_args(words("-controloutfd 7 -controlinfd 8 -fd 9 -mode hvm_save -domid 12 -live true -dm qemu"));
    BOOST_TEST(a.control_out == 7);
    BOOST_TEST(a.control_in == 8);
    BOOST_TEST(a.fd == 9);
    BOOST_TEST((a.mode == Mode::hvm_save));
    BOOST_TEST(a.domid == 12u);
    BOOST_TEST(a.live);
    BOOST_TEST(a.dm == "qemu");
    BOOST_TEST(a.save());
    BOOST_TEST(stock_reason_from_args(a).empty());

    auto r = parse_emu_args(
        words("-controloutfd 7 -controlinfd 8 -fd 9 -mode hvm_restore -domid 3 -store_port 11 -console_port 12 "
              "-mem_pnode 0 -fork true -debug true"));
    BOOST_TEST((r.mode == Mode::hvm_restore));
    BOOST_TEST(*r.store_port == 11u);
    BOOST_TEST(*r.console_port == 12u);
    BOOST_TEST(r.debug);
}

BOOST_AUTO_TEST_CASE(argv_getopt_long_only_forms)
{
    // --x, -x=v and an unambiguous prefix all work, as in emum.c.
    auto a = parse_emu_args(words("--controloutfd=7 -controlin 8 --fd 9 -mode=save -dom 4"));
    BOOST_TEST(a.control_in == 8);
    BOOST_TEST(a.domid == 4u);
    BOOST_TEST(stock_reason_from_args(a) == "a PV guest (-mode save)");
    BOOST_TEST(parse_emu_args(words("-supports migration-v2")).supports == "migration-v2");
    auto v = parse_emu_args(words("-controloutfd 1 -controlinfd 2 -fd 3 -mode hvm_save -domid 4 -dm vgpu:3"));
    BOOST_TEST(stock_reason_from_args(v) == "a vGPU (-dm vgpu:3)");
}

BOOST_AUTO_TEST_CASE(argv_errors_are_usage_errors)
{
    const char* bad[] = {
        "",                                                                      // nothing required
        "-controloutfd 1 -controlinfd 2 -fd 3 -mode hvm_save",                   // no domid
        "-controloutfd 1 -controlinfd 2 -fd 3 -mode hvm_restore -domid 4",       // no ports
        "-controloutfd 1 -controlinfd 2 -fd 3 -mode suspend -domid 4",           // unknown mode
        "-controloutfd 1 -controlinfd 2 -fd 3 -mode hvm_save -domid 40000",      // above DOMID_FIRST_RESERVED
        "-controloutfd 1 -controlinfd 2 -fd 3 -mode hvm_save -domid 4 -live yes",
        "-controloutfd 1 -controlinfd 2 -fd 3 -mode hvm_save -domid 4 -dm bochs",
        "-controloutfd 1 -controlinfd 2 -fd 3 -mode hvm_save -domid 4 -bogus 1", // unknown option
        "-controloutfd 1 -controlinfd 2 -fd 3 -mode hvm_save -domid 4 extra",   // stray word
        "-controloutfd 1 -controlinfd 2 -fd 1 -mode hvm_save -domid 4",          // same fd twice
        "-controloutfd x -controlinfd 2 -fd 3 -mode hvm_save -domid 4",
        "-controloutfd 1 -controlinfd 2 -fd 3 -mode hvm_save -domid",            // value missing
        "-con 1 -controlinfd 2 -fd 3 -mode hvm_save -domid 4",                   // ambiguous prefix
    };
    for (const char* b : bad)
        BOOST_CHECK_THROW(parse_emu_args(words(b)), UsageError);
}

BOOST_AUTO_TEST_CASE(peek_leaves_a_pipe_as_it_was)
{
    int p[2];
    BOOST_REQUIRE(::pipe(p) == 0);
    BOOST_REQUIRE(::write(p[1], "restore:xenguest\nabort\n", 23) == 23);
    auto got = peek_fd(p[0], 128, 1s, [](std::span<const std::uint8_t> b) {
        return std::find(b.begin(), b.end(), '\n') != b.end();
    });
    BOOST_TEST(std::string(got.begin(), got.end()) == "restore:xenguest\nabort\n");
    ::close(p[1]);
    BOOST_TEST(read_some(p[0]) == "restore:xenguest\nabort\n");
    ::close(p[0]);
}

BOOST_AUTO_TEST_CASE(peek_waits_for_enough_bytes_on_a_socket)
{
    int sv[2];
    BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    BOOST_REQUIRE(::write(sv[1], "\xff\xff\xff", 3) == 3);
    std::thread later([&] {
        std::this_thread::sleep_for(50ms);
        (void)!::write(sv[1], "\xff\xff\xff\xff\xffXENF", 9);
    });
    auto got = peek_fd(sv[0], 8, 2s, any_byte);
    later.join();
    BOOST_TEST(got.size() == 8u);
    BOOST_TEST(read_some(sv[0]).size() == 12u); // all still there
    ::close(sv[0]);
    ::close(sv[1]);
}

BOOST_AUTO_TEST_CASE(peek_a_file_reads_at_its_offset_without_moving_it)
{
    char path[] = "/tmp/fastmig-peek-XXXXXX";
    int fd = ::mkstemp(path);
    BOOST_REQUIRE(fd >= 0);
    ::unlink(path);
    BOOST_REQUIRE(::write(fd, "HEADERFMIG\r\nS\0tail", 18) == 18);
    BOOST_REQUIRE(::lseek(fd, 6, SEEK_SET) == 6);
    auto got = peek_fd(fd, 8, 1s, any_byte);
    BOOST_TEST(std::string(got.begin(), got.end()) == std::string("FMIG\r\nS\0", 8));
    BOOST_TEST(::lseek(fd, 0, SEEK_CUR) == 6);
    auto tail = peek_fd(fd, 64, 1s, any_byte); // short at EOF: what there is
    BOOST_TEST(tail.size() == 12u);
    ::close(fd);
}

BOOST_AUTO_TEST_CASE(peek_times_out_and_says_so)
{
    int p[2];
    BOOST_REQUIRE(::pipe(p) == 0);
    BOOST_REQUIRE(::write(p[1], "abc", 3) == 3);
    try {
        peek_fd(p[0], 8, 100ms, any_byte);
        BOOST_FAIL("no timeout");
    } catch (const fastmig::Error& e) {
        BOOST_TEST(std::string(e.what()).find("3 bytes after 100 ms") != std::string::npos);
    }
    ::close(p[1]); // the writer gone: fewer bytes, no error
    BOOST_TEST(peek_fd(p[0], 8, 1s, any_byte).size() == 3u);
    ::close(p[0]);
}

struct Pipes {
    int to_us[2], from_us[2];
    Pipes()
    {
        BOOST_REQUIRE(::pipe(to_us) == 0);
        BOOST_REQUIRE(::pipe(from_us) == 0);
    }
    ~Pipes()
    {
        ::close(to_us[1]);
        ::close(from_us[0]);
    }
};

BOOST_AUTO_TEST_CASE(control_lines_round_trips_and_progress)
{
    fastmig::enable_io_cancellation();
    Pipes p;
    XenopsdLink x(p.from_us[1], p.to_us[0], 2s);
    x.start_reader();
    // A line split across writes, then two in one.
    (void)!::write(p.to_us[1], "res", 3);
    std::this_thread::sleep_for(20ms);
    (void)!::write(p.to_us[1], "tore:xenguest\ndone\n", 19);
    BOOST_TEST(x.next_line(1s, "test") == "restore:xenguest");
    x.round_trip("prepare:xenguest");
    BOOST_TEST(read_some(p.from_us[0]) == "prepare:xenguest\n");
    x.progress(5);
    x.progress(5);
    x.progress(3);
    x.progress(250);
    BOOST_TEST(read_some(p.from_us[0]) == "info:\\b\\b\\b\\b5\ninfo:\\b\\b\\b\\b100\n");
    x.send_error(std::string(300, 'e'));
    std::string line = read_some(p.from_us[0]);
    BOOST_TEST(line.size() == 128u);
    BOOST_TEST(line.substr(124) == "...\n");
    x.close();
}

BOOST_AUTO_TEST_CASE(control_unanswered_and_wrong_answers)
{
    Pipes p;
    XenopsdLink x(p.from_us[1], p.to_us[0], 150ms);
    x.start_reader();
    try {
        x.round_trip("suspend:");
        BOOST_FAIL("no timeout");
    } catch (const fastmig::Error& e) {
        BOOST_TEST(std::string(e.what()) == "no answer from xenopsd to 'suspend:' within 150 ms");
    }
    (void)!::write(p.to_us[1], "restore:xenguest\n", 17);
    BOOST_CHECK_THROW(x.round_trip("suspend:"), fastmig::Error); // not `done`
    BOOST_TEST(!fastmig::io_cancelled());
    x.close();
}

// A fake QEMU on a QMP socket: sends `script` lines in turn, each after
// reading one command line when it starts with '<' (the command is kept).
struct FakeQmp {
    std::string dir, path;
    std::vector<std::string> got;
    std::thread t;
    int lfd = -1;
    explicit FakeQmp(std::vector<std::string> script)
    {
        char tmpl[] = "/tmp/fastmig-qmp-XXXXXX";
        dir = ::mkdtemp(tmpl);
        path = dir + "/qmp-libxl-9";
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strcpy(a.sun_path, path.c_str());
        lfd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        BOOST_REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        BOOST_REQUIRE(::listen(lfd, 1) == 0);
        t = std::thread([this, script] {
            int c = ::accept(lfd, nullptr, nullptr);
            std::string in;
            for (const auto& step : script) {
                if (step == "<") {
                    while (in.find('\n') == std::string::npos) {
                        char buf[256];
                        ssize_t n = ::read(c, buf, sizeof buf);
                        if (n <= 0)
                            break;
                        in.append(buf, std::size_t(n));
                    }
                    auto nl = in.find('\n');
                    got.push_back(in.substr(0, nl));
                    in.erase(0, nl == std::string::npos ? in.size() : nl + 1);
                } else if (step == "wait") {
                    std::this_thread::sleep_for(500ms);
                } else {
                    std::string l = step + "\r\n";
                    (void)!::write(c, l.data(), l.size());
                }
            }
            ::close(c);
        });
    }
    // The commands it read, once its script is over.
    std::vector<std::string> commands()
    {
        if (t.joinable())
            t.join();
        return got;
    }
    ~FakeQmp()
    {
        if (t.joinable())
            t.join();
        ::close(lfd);
        ::unlink(path.c_str());
        ::rmdir(dir.c_str());
    }
};

const char kGreeting[] = R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}})";

BOOST_AUTO_TEST_CASE(qmp_switches_qemus_dirty_log_on)
{
    {
        FakeQmp q({kGreeting, "<", R"({"return": {}})", "<",
                   R"({"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"})", R"({"return": {}})"});
        qmp_enable_dirty_log(q.path, 2s);
        auto got = q.commands();
        BOOST_REQUIRE(got.size() == 2u);
        BOOST_TEST(got[0].find(R"("execute": "qmp_capabilities")") != std::string::npos);
        BOOST_TEST(got[1].find(R"("execute": "xen-set-global-dirty-log")") != std::string::npos);
        BOOST_TEST(got[1].find(R"("enable": true)") != std::string::npos);
    }
    ::setenv("FASTMIG_QMP_DIR", "/run/x", 1);
    BOOST_TEST(qmp_socket_path(9) == "/run/x/qmp-libxl-9");
    ::unsetenv("FASTMIG_QMP_DIR");
    BOOST_TEST(qmp_socket_path(9) == "/var/run/xen/qmp-libxl-9");
}

BOOST_AUTO_TEST_CASE(qmp_failures_name_the_socket_and_the_cause)
{
    auto expect = [](const std::function<void()>& f, const std::string& part) {
        try {
            f();
            BOOST_FAIL("no error");
        } catch (const fastmig::Error& e) {
            BOOST_TEST_INFO(e.what());
            BOOST_TEST(std::string(e.what()).find(part) != std::string::npos);
            BOOST_TEST(std::string(e.what()).find("QEMU's QMP socket") == 0u);
        }
    };
    {
        FakeQmp q({kGreeting, "<", R"({"return": {}})", "<",
                   R"({"error": {"class": "GenericError", "desc": "no dirty log here"}})"});
        expect([&] { qmp_enable_dirty_log(q.path, 2s); }, "xen-set-global-dirty-log refused: ");
    }
    {
        FakeQmp q({"wait"}); // never greets
        expect([&] { qmp_enable_dirty_log(q.path, 100ms); }, "no answer within 100 ms");
    }
    {
        FakeQmp q({"HTTP/1.0 400 Bad Request"});
        expect([&] { qmp_enable_dirty_log(q.path, 1s); }, "not a QMP message");
    }
    expect([] { qmp_enable_dirty_log("/nonexistent/qmp-libxl-9", 1s); }, "/nonexistent/qmp-libxl-9: connect: ");
}

// --- restore progress ------------------------------------------------------

namespace {

// A backend's domain that records what reaches it.
struct RecordingDomain : fastmig::IncomingDomain {
    explicit RecordingDomain(std::uint64_t n) : n_(n) {}
    std::string name() const override { return "rec"; }
    std::uint64_t nr_pages() const override { return n_; }
    void write_pages(std::span<const fastmig::Pfn> p, std::span<const std::uint8_t>) override { written += p.size(); }
    void write_pages_gather(std::span<const fastmig::Pfn> p, std::span<const std::uint8_t* const>) override
    {
        gathered += p.size();
    }
    void zero_pages(std::span<const fastmig::Pfn> p) override { rezeroed += p.size(); }
    void zero_fresh_pages(std::span<const fastmig::Pfn> p) override { fresh += p.size(); }
    void read_page(fastmig::Pfn, std::span<std::uint8_t>) override {}
    void restore_state(const std::vector<fastmig::StateBlob>&) override {}
    void unpause() override {}
    fastmig::DomainClock clock() const override { return {}; }
    void destroy() override {}
    std::uint64_t n_, written = 0, gathered = 0, rezeroed = 0, fresh = 0;
};

struct RecordingProvider : fastmig::DomainProvider {
    std::unique_ptr<fastmig::IncomingDomain> create(std::uint64_t n, std::uint32_t, const std::string&) override
    {
        auto d = std::make_unique<RecordingDomain>(n);
        last = d.get();
        return d;
    }
    RecordingDomain* last = nullptr;
};

} // namespace

BOOST_AUTO_TEST_CASE(restore_progress_counts_each_page_once)
{
    PageArrivals a(1000);
    std::vector<fastmig::Pfn> first = {0, 1, 2, 3, 999};
    BOOST_TEST(a.mark(first) == 5u);
    BOOST_TEST(a.mark(first) == 5u); // a later round re-sends them: not counted again
    std::vector<fastmig::Pfn> beyond = {1000, 5000};
    BOOST_TEST(a.mark(beyond) == 5u);
    BOOST_TEST(a.percent() == 0u);
    std::vector<fastmig::Pfn> all(1000);
    for (std::size_t i = 0; i < all.size(); ++i)
        all[i] = i;
    BOOST_TEST(a.mark(all) == 1000u);
    BOOST_TEST(a.percent() == 99u); // 100 is the result's
    BOOST_TEST(PageArrivals(0).percent() == 0u);
}

BOOST_AUTO_TEST_CASE(restore_progress_rate_limit)
{
    RateLimit r(500ms);
    const std::int64_t ms = 1000000;
    BOOST_TEST(r.due(1000 * ms)); // the first is due
    BOOST_TEST(!r.due(1000 * ms));
    BOOST_TEST(!r.due(1499 * ms));
    BOOST_TEST(r.due(1500 * ms));
    BOOST_TEST(!r.due(1600 * ms));
    BOOST_TEST(r.due(9000 * ms)); // after a long gap: due once, then waits again
    BOOST_TEST(!r.due(9001 * ms));
    RateLimit every(0ms);
    BOOST_TEST(every.due(5));
    BOOST_TEST(every.due(5));
}

BOOST_AUTO_TEST_CASE(restore_progress_forwards_and_reports)
{
    RecordingProvider backend;
    std::vector<unsigned> reports;
    ProgressProvider p(backend, 0ms, [&](unsigned pc) { reports.push_back(pc); });
    auto d = p.create(100, fastmig::kDomainKindSim, "src");
    BOOST_REQUIRE(backend.last);
    BOOST_TEST(&ProgressProvider::backend_domain(*d) == backend.last);
    BOOST_TEST(d->nr_pages() == 100u);
    std::vector<std::uint8_t> page(fastmig::kPageSize);
    std::vector<const std::uint8_t*> srcs(10, page.data());
    for (fastmig::Pfn base = 0; base < 100; base += 10) {
        std::vector<fastmig::Pfn> pfns;
        for (fastmig::Pfn i = base; i < base + 10; ++i)
            pfns.push_back(i);
        if (base < 50)
            d->write_pages_gather(pfns, srcs); // the backend's own gather, not the default's split
        else
            d->zero_fresh_pages(pfns);
    }
    std::vector<fastmig::Pfn> again = {0, 1, 2};
    d->zero_pages(again);
    BOOST_TEST(backend.last->gathered == 50u);
    BOOST_TEST(backend.last->written == 0u);
    BOOST_TEST(backend.last->fresh == 50u);
    BOOST_TEST(backend.last->rezeroed == 3u);
    BOOST_TEST(reports == (std::vector<unsigned>{10, 20, 30, 40, 50, 60, 70, 80, 90, 99}),
               boost::test_tools::per_element());
    // A domain this provider did not create is its own backend domain.
    RecordingDomain other(1);
    BOOST_TEST(&ProgressProvider::backend_domain(other) == &other);
}

BOOST_AUTO_TEST_CASE(restore_progress_interval_is_configurable)
{
    ::setenv("FASTMIG_EMU_PROGRESS_MS", "0", 1);
    BOOST_TEST(progress_interval().count() == 0);
    ::setenv("FASTMIG_EMU_PROGRESS_MS", "soon", 1);
    BOOST_CHECK_THROW(progress_interval(), fastmig::Error);
    ::unsetenv("FASTMIG_EMU_PROGRESS_MS");
    BOOST_TEST(progress_interval().count() == 500);
}

// Last: an abort cancels every I/O wait of the process, for good.
BOOST_AUTO_TEST_CASE(control_abort_cancels_everything)
{
    Pipes p;
    XenopsdLink x(p.from_us[1], p.to_us[0], 5s);
    x.start_reader();
    (void)!::write(p.to_us[1], "abort\n", 6);
    try {
        x.next_line(5s, "the restore");
        BOOST_FAIL("no abort");
    } catch (const fastmig::Error& e) {
        BOOST_TEST(std::string(e.what()).find("xenopsd sent abort") != std::string::npos);
    }
    BOOST_TEST(x.aborted());
    BOOST_TEST(fastmig::io_cancelled());
    x.close();
}
