// Internal to the Xen backend: owned handles, foreign mappings and errors.
// Includes Xen's headers; never included from outside this folder.
#pragma once

#ifndef __XEN_TOOLS__
#define __XEN_TOOLS__ 1
#endif
// Xen's tool headers have no extern "C" guards of their own.
extern "C" {
#include <xenctrl.h>
#include <xenevtchn.h>
#include <xenforeignmemory.h>
#include <xenguest.h>
#include <xenstore.h>
}

#include "stream/domain/xen/xen_domain.hpp"
#include "stream/types.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace fastmig::xen {

// "what: strerror(errno)" as an Error of domain `who` in `phase`.
[[noreturn]] inline void fail_errno(const std::string& who, Phase phase, const std::string& what)
{
    int e = errno;
    throw Error(who, phase, what + ": " + std::strerror(e));
}

// Runs f; an Error without context gets (who, phase) and keeps its kind
// (raise: an AuthError or InDoubtError is still caught as one).
template <class F> auto in_phase(const std::string& who, Phase phase, F&& f) -> decltype(f())
{
    try {
        return f();
    } catch (const Error& e) {
        if (e.has_context())
            throw;
        raise(e.with_context(who, phase));
    }
}

struct XcHandle {
    xc_interface* xch = nullptr;
    xenforeignmemory_handle* fmem = nullptr;
    XcHandle(const std::string& who)
    {
        xch = xc_interface_open(nullptr, nullptr, 0);
        if (!xch)
            fail_errno(who, Phase::setup, "cannot open the hypervisor interface (is this dom0 of a Xen host?)");
        fmem = xenforeignmemory_open(nullptr, 0);
        if (!fmem) {
            int e = errno;
            xc_interface_close(xch);
            errno = e;
            fail_errno(who, Phase::setup, "cannot open the foreign memory interface");
        }
    }
    ~XcHandle()
    {
        xenforeignmemory_close(fmem);
        xc_interface_close(xch);
    }
    XcHandle(const XcHandle&) = delete;
    XcHandle& operator=(const XcHandle&) = delete;
};

// One foreign mapping of `n` frames of a domain (unmapped on destruction).
class ForeignMap {
public:
    ForeignMap() = default;
    // Maps frames; per-frame failures are reported through errs (size n).
    ForeignMap(xenforeignmemory_handle* fmem, std::uint32_t domid, int prot, const std::vector<xen_pfn_t>& frames,
               std::vector<int>& errs)
        : fmem_(fmem), n_(frames.size())
    {
        errs.assign(n_, 0);
        if (n_)
            addr_ = static_cast<std::uint8_t*>(xenforeignmemory_map(fmem, domid, prot, n_, frames.data(), errs.data()));
    }
    ~ForeignMap() { reset(); }
    ForeignMap(ForeignMap&& o) noexcept { *this = std::move(o); }
    ForeignMap& operator=(ForeignMap&& o) noexcept
    {
        if (this != &o) {
            reset();
            fmem_ = o.fmem_;
            addr_ = o.addr_;
            n_ = o.n_;
            o.addr_ = nullptr;
            o.n_ = 0;
        }
        return *this;
    }
    void reset()
    {
        if (addr_)
            xenforeignmemory_unmap(fmem_, addr_, n_);
        addr_ = nullptr;
        n_ = 0;
    }
    explicit operator bool() const { return addr_ != nullptr; }
    std::uint8_t* page(std::size_t i) const { return addr_ + i * kPageSize; }
    std::size_t size() const { return n_; }

private:
    xenforeignmemory_handle* fmem_ = nullptr;
    std::uint8_t* addr_ = nullptr;
    std::size_t n_ = 0;
};

// A xenstore connection for a few reads (closed on destruction); without
// xenstored every read says "absent".
class XsHandle {
public:
    XsHandle() : xs_(xs_open(0)) {}
    ~XsHandle()
    {
        if (xs_)
            xs_close(xs_);
    }
    XsHandle(const XsHandle&) = delete;
    XsHandle& operator=(const XsHandle&) = delete;
    explicit operator bool() const { return xs_ != nullptr; }
    // The node's value, "" when absent.
    std::string read(const std::string& path) const
    {
        if (!xs_)
            return "";
        unsigned len = 0;
        char* v = static_cast<char*>(xs_read(xs_, XBT_NULL, path.c_str(), &len));
        std::string out = v ? std::string(v, len) : std::string();
        free(v);
        return out;
    }
private:
    xs_handle* xs_;
};

// Hypercall-safe memory of `bytes` (whole pages), freed on destruction.
class HypercallBuffer {
public:
    HypercallBuffer(xc_interface* xch, std::size_t bytes, const std::string& who, Phase phase,
                    const std::string& what)
        : xch_(xch), pages_(int((bytes + kPageSize - 1) / kPageSize))
    {
        if (pages_ == 0)
            pages_ = 1;
        if (!xc__hypercall_buffer_alloc_pages(xch_, &b_, pages_))
            fail_errno(who, phase, "cannot allocate a hypercall buffer for " + what);
    }
    ~HypercallBuffer() { xc__hypercall_buffer_free_pages(xch_, &b_, pages_); }
    HypercallBuffer(const HypercallBuffer&) = delete;
    HypercallBuffer& operator=(const HypercallBuffer&) = delete;
    template <class T = void> T* get() const { return static_cast<T*>(b_.hbuf); }
    xc_hypercall_buffer_t* raw() { return &b_; }

private:
    xc_interface* xch_;
    xc_hypercall_buffer_t b_{};
    int pages_;
};

// Maps frames and throws Error naming the first frame that failed.
ForeignMap map_frames(xenforeignmemory_handle* fmem, std::uint32_t domid, int prot,
                      const std::vector<xen_pfn_t>& frames, const std::string& who, Phase phase,
                      const std::string& what);

// The domain's info (single domid), or Error "domain N does not exist".
xc_domaininfo_t domain_info(xc_interface* xch, std::uint32_t domid, const std::string& who, Phase phase);
bool is_suspended(const xc_domaininfo_t& info);
std::string describe_state(const xc_domaininfo_t& info);

// A logger that writes "fastmig <who>: line" to stderr when none is given.
LogFn default_log(LogFn log, const std::string& who);

} // namespace fastmig::xen
