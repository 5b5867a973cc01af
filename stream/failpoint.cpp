#include "stream/failpoint.hpp"

#include "stream/types.hpp"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>

#include <unistd.h>

namespace fastmig {

namespace {

struct Armed {
    std::map<std::string, std::string> actions;
};

const Armed& armed()
{
    static const Armed a = [] {
        Armed r;
        const char* env = std::getenv("FASTMIG_FAILPOINTS");
        if (!env)
            return r;
        std::string s = env;
        std::size_t pos = 0;
        while (pos <= s.size()) {
            std::size_t end = s.find(',', pos);
            if (end == std::string::npos)
                end = s.size();
            std::string item = s.substr(pos, end - pos);
            std::size_t eq = item.find('=');
            if (!item.empty()) {
                if (eq == std::string::npos || eq == 0)
                    std::fprintf(stderr, "fastmig: ignoring malformed FASTMIG_FAILPOINTS item '%s'\n", item.c_str());
                else
                    r.actions[item.substr(0, eq)] = item.substr(eq + 1);
            }
            pos = end + 1;
        }
        return r;
    }();
    return a;
}

} // namespace

void failpoint(const char* name)
{
    const Armed& a = armed();
    if (a.actions.empty())
        return;
    auto it = a.actions.find(name);
    if (it == a.actions.end())
        return;
    const std::string& act = it->second;
    std::fprintf(stderr, "fastmig: failpoint %s: %s\n", name, act.c_str());
    std::fflush(stderr);
    if (act == "kill") {
        ::kill(::getpid(), SIGKILL);
        ::pause();
    } else if (act == "exit") {
        ::_exit(99);
    } else if (act == "error") {
        throw Error(std::string("failpoint ") + name);
    } else if (act.rfind("sleep:", 0) == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(std::strtoull(act.c_str() + 6, nullptr, 10)));
    } else {
        std::fprintf(stderr, "fastmig: failpoint %s: unknown action '%s' ignored\n", name, act.c_str());
    }
}

} // namespace fastmig
