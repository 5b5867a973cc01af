#include "libxl-plugin/libxl_msgs.hpp"

#include <cstring>
#include <stdexcept>

namespace fastmig::helper {

namespace {

// Builds one frame: the length is filled in by done().
class Builder {
public:
    explicit Builder(Msg m)
    {
        b_.resize(2); // body length, below
        put(static_cast<std::uint16_t>(m));
    }
    template <class T> Builder& put(T v)
    {
        static_assert(std::is_trivially_copyable_v<T>);
        std::uint8_t raw[sizeof v];
        std::memcpy(raw, &v, sizeof v);
        b_.insert(b_.end(), raw, raw + sizeof v);
        return *this;
    }
    // libxl's STRING: non-empty, NUL-terminated, no NUL inside (libxl reads
    // it as a C string: anything after an inner NUL would be lost).
    Builder& put_string(const std::string& s, std::size_t max)
    {
        std::string t = s.substr(0, s.find('\0'));
        if (t.size() > max)
            t = t.substr(0, max - 3) + "...";
        put(static_cast<std::uint32_t>(t.size() + 1));
        b_.insert(b_.end(), t.begin(), t.end());
        b_.push_back(0);
        return *this;
    }
    Frame done()
    {
        std::size_t body = b_.size() - 2;
        if (body > kMaxMsgBody)
            throw std::length_error("libxl message of " + std::to_string(body) + " bytes");
        auto len = static_cast<std::uint16_t>(body);
        std::memcpy(b_.data(), &len, sizeof len);
        return std::move(b_);
    }

private:
    Frame b_;
};

} // namespace

Frame encode_log(XtlLevel level, std::uint32_t errnoval, const std::string& context, const std::string& text)
{
    return Builder(Msg::log)
        .put(static_cast<std::uint32_t>(level))
        .put(errnoval)
        .put_string(context, 256)
        .put_string(text, kMaxLogText)
        .done();
}

Frame encode_progress(const std::string& context, const std::string& doing_what, std::uint64_t done,
                      std::uint64_t total)
{
    static_assert(sizeof(unsigned long) == 8, "libxl's 'unsigned long' is 8 bytes on the hosts fastmig targets");
    return Builder(Msg::progress)
        .put_string(context, 256)
        .put_string(doing_what, 1024)
        .put(static_cast<unsigned long>(done))
        .put(static_cast<unsigned long>(total))
        .done();
}

Frame encode_no_args(Msg m)
{
    if (m != Msg::suspend && m != Msg::postcopy && m != Msg::checkpoint && m != Msg::wait_checkpoint)
        throw std::invalid_argument("message " + std::to_string(unsigned(m)) + " has arguments");
    return Builder(m).done();
}

Frame encode_switch_qemu_logdirty(std::uint32_t domid, unsigned enable)
{
    return Builder(Msg::switch_qemu_logdirty).put(domid).put(enable).done();
}

Frame encode_static_data_done(unsigned missing) { return Builder(Msg::static_data_done).put(missing).done(); }

Frame encode_restore_results(std::uint64_t store_gfn, std::uint64_t console_gfn)
{
    // xen_pfn_t is unsigned long on x86.
    return Builder(Msg::restore_results)
        .put(static_cast<unsigned long>(store_gfn))
        .put(static_cast<unsigned long>(console_gfn))
        .done();
}

Frame encode_complete(int retval, int errnoval) { return Builder(Msg::complete).put(retval).put(errnoval).done(); }

} // namespace fastmig::helper
