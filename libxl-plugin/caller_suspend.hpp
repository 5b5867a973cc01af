// A source domain whose suspension is the caller's job: libxl's suspend
// callback (the libxl-save-helper) or xenopsd's `suspend:` round trip
// (fastmig-emu-manager).  The caller's toolstack asks the guest, saves the
// device model, and so on; then the backend confirms the guest stopped.
//
// `ask` returns "" once the toolstack says the guest is suspended, else why
// not.  A refusal may come after the toolstack stopped the guest part way
// (the guest suspended, saving the device model failed), so the domain is
// resumed where the backend can tell before the error goes up: the sim
// backend resumes a stopped guest and ignores a running one; the Xen
// backend's resume acts only after its own confirmation of the suspension,
// which has not happened here.
#pragma once

#include "stream/domain.hpp"

#include <functional>
#include <string>

namespace fastmig::helper {

class CallerSuspendedDomain : public ForwardingDomain {
public:
    using AskFn = std::function<std::string()>;
    // With `ask` empty the backend suspends the guest itself (it asks the
    // guest and learns of its suspension alone): only the calls are counted.
    CallerSuspendedDomain(Domain& inner, AskFn ask) : ForwardingDomain(inner), ask_(std::move(ask)) {}

    void suspend(std::chrono::milliseconds timeout) override
    {
        ++suspend_calls_;
        if (ask_) {
            std::string why;
            try {
                why = ask_();
            } catch (const Error& e) {
                why = e.cause(); // no answer (cancelled, the toolstack gone)
            }
            if (!why.empty()) {
                try {
                    d_.resume();
                    why += "; the domain was resumed";
                } catch (const std::exception& e) {
                    why += std::string("; resuming it failed: ") + e.what();
                }
                throw Error(why);
            }
        }
        d_.suspend(timeout);
    }
    unsigned suspend_calls() const { return suspend_calls_; }

private:
    AskFn ask_;
    unsigned suspend_calls_ = 0;
};

} // namespace fastmig::helper
