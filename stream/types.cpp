#include "stream/types.hpp"

#include <pthread.h>

#include "stream/domain.hpp"

#include <cerrno>
#include <cstring>

namespace fastmig {

const char* phase_name(Phase p)
{
    switch (p) {
    case Phase::setup: return "setup";
    case Phase::authenticate: return "authenticate";
    case Phase::negotiate: return "negotiate";
    case Phase::precopy: return "precopy";
    case Phase::stop_copy: return "stop-and-copy";
    case Phase::state: return "platform state";
    case Phase::finish: return "finish";
    case Phase::commit: return "commit";
    case Phase::receive: return "receive";
    case Phase::restore: return "restore";
    case Phase::resume: return "resume";
    case Phase::verify: return "verify";
    }
    return "unknown";
}

const char* orphan_policy_name(OrphanPolicy p)
{
    switch (p) {
    case OrphanPolicy::none: return "none";
    case OrphanPolicy::resume: return "resume";
    case OrphanPolicy::keep_paused: return "keep-paused";
    case OrphanPolicy::destroy: return "destroy";
    }
    return "unknown";
}

Error::Error(std::string domain, Phase phase, const std::string& cause, ErrorKind kind)
    : std::runtime_error(domain + ": " + phase_name(phase) + ": " + cause),
      cause_(cause), domain_(std::move(domain)), phase_(phase), has_context_(true), kind_(kind)
{
}

Error Error::with_context(const std::string& domain, Phase phase) const
{
    if (has_context_)
        return *this;
    return Error(domain, phase, cause_, kind_);
}

Error Error::relabelled(const std::string& cause) const
{
    return has_context_ ? Error(domain_, phase_, cause, kind_) : Error(cause, kind_);
}

void raise(const Error& e)
{
    switch (e.kind()) {
    case ErrorKind::local: throw e;
    case ErrorKind::stream: throw StreamError(e);
    case ErrorKind::auth: throw AuthError(e);
    case ErrorKind::in_doubt: throw InDoubtError(e);
    }
    throw e;
}

void throw_errno(const std::string& what)
{
    int e = errno;
    throw Error(what + ": " + std::strerror(e));
}

void name_this_thread(const std::string& name)
{
    // Best effort: a name is a debugging aid, never worth failing for.
    (void)::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str());
}

} // namespace fastmig
