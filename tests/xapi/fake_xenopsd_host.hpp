// fake_xenopsd's options and its Host: what xenopsd does to the guests
// around the emu-manager (ocaml/xenopsd/xc/domain.ml), on sim guests
// (fake_xenopsd.cpp) or on real Xen domains (xen_host.cpp, in
// fake_xenopsd_xen for the nested-Xen harness).
#pragma once

#include <memory>
#include <string>

namespace fastmig::fake_xenopsd {

struct Opts {
    std::string emu, mode, file;
    int domid = -1; // the source (sim id, or Xen domid)
    unsigned rdomid = 77; // sim: the label the restore's argv carries
    bool live = false, pv = false;
    std::string dm, no_done;
    int abort_after_info = -1;
    long long corrupt_at = -1, cut_at = -1;
    // Xen: the domain build_pre makes (xenopsd takes these from the VM's
    // record; here from the command line).
    std::string name = "fm-xapi";
    unsigned long memory_mib = 512, vcpus = 1;
    bool hap = false;
    std::string platform_file; // `key = value` lines written under platform/
};

class Host {
public:
    struct Built {
        unsigned domid = 0, store_port = 0, console_port = 0;
        std::string note; // what was built, for the transcript ("" for nothing)
    };
    virtual ~Host() = default;
    // `suspend:` (answer: false when the test withholds `done`, and then
    // nothing is done to the guest): the guest's state before, for the
    // transcript.
    virtual std::string suspend(int domid, bool answer) = 0;
    // Domain.build_pre: the domain the restore goes into.
    virtual Built build_pre(const Opts& o) = 0;
    // Domain.build_post, after result:xenguest.
    virtual void build_post(const Built&, unsigned long long /*store_mfn*/, unsigned long long /*console_mfn*/) {}
    // The restore failed: the domain as Xen has it now, for the transcript
    // ("" for nothing); then xenopsd destroys what build_pre made.
    virtual std::string describe_failed(const Built&) { return ""; }
    virtual void restore_failed(const Built&) {}
    // After a restore from a file: unpause.  After a migration: the
    // destination runs, then the source goes.  Say what was done ("" for
    // nothing).
    virtual std::string finish_restore(unsigned /*domid*/) { return ""; }
    virtual std::string finish_migration(int /*source*/, unsigned /*destination*/) { return ""; }
};

std::unique_ptr<Host> make_xen_host();

} // namespace fastmig::fake_xenopsd
