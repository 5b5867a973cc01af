// The messages the save helper sends libxl on its stdout, byte for byte as
// libxl 4.17 decodes them (tools/libs/light/libxl_save_msgs_gen.pl; layout
// in docs/libxl-helper.md).  Native byte order and native type sizes
// (x86_64: int/unsigned/uint32_t 4 bytes, unsigned long/xen_pfn_t 8), since
// both ends run on the same host.
//
// Frame: u16 body length, then the body: u16 message number, then the
// arguments in order.  A STRING is a u32 length counting a final NUL, then
// the bytes and the NUL.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fastmig::helper {

enum class Msg : std::uint16_t {
    log = 1,                  // save+restore: u32 level, u32 errnoval, STRING context, STRING text
    progress = 2,             // save+restore: STRING context, STRING doing_what, ulong done, ulong total
    suspend = 3,              // callback, reply int: 1 = suspended, 0 = failed
    postcopy = 4,             // callback (Remus/COLO only)
    checkpoint = 5,           // callback (Remus/COLO only)
    wait_checkpoint = 6,      // callback (COLO only)
    switch_qemu_logdirty = 7, // save callback: u32 domid, unsigned enable; reply int: 0 = done
    static_data_done = 8,     // restore callback: unsigned missing; reply int: 0 = ok
    restore_results = 9,      // restore: xen_pfn_t store_gfn, xen_pfn_t console_gfn; no reply
    complete = 10,            // save+restore: int retval, int errnoval; reply int (libxl sends 0)
};

// Bit of `cbflags` saying libxl provides that callback (libxl sets it with
// 1u << message number; 136 = suspend | switch_qemu_logdirty for a plain save).
constexpr unsigned cbflag(Msg m) { return 1u << unsigned(m); }

// xentoollog levels (tools/include/xentoollog.h).
enum class XtlLevel : std::uint32_t {
    debug = 1, verbose = 2, detail = 3, progress = 4, info = 5, notice = 6, warn = 7, error = 8, critical = 9
};

// libxl reads the length into a uint16_t; the stock helper asserts below 64 KiB.
constexpr std::size_t kMaxMsgBody = 0xffff;
// Text beyond this is cut (with "...") so a log message always fits.
constexpr std::size_t kMaxLogText = 8192;

using Frame = std::vector<std::uint8_t>;

Frame encode_log(XtlLevel level, std::uint32_t errnoval, const std::string& context, const std::string& text);
Frame encode_progress(const std::string& context, const std::string& doing_what, std::uint64_t done,
                      std::uint64_t total);
Frame encode_no_args(Msg m); // suspend, postcopy, checkpoint, wait_checkpoint
Frame encode_switch_qemu_logdirty(std::uint32_t domid, unsigned enable);
Frame encode_static_data_done(unsigned missing);
Frame encode_restore_results(std::uint64_t store_gfn, std::uint64_t console_gfn);
Frame encode_complete(int retval, int errnoval);

} // namespace fastmig::helper
