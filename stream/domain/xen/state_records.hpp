// The platform-state record types of the Xen backend (libxc's numbers, and
// fastmig's own above 0x10000): their names for messages, and which guest
// class each belongs to.  The PV and HVM parsers refuse the other class's.
#pragma once

#include <cstdint>

namespace fastmig::xen {

// "X86_PV_INFO", "HVM_CONTEXT", ...; nullptr for a type the backend does
// not know.
const char* state_record_name(std::uint32_t type);
// The name of a known record that a PV (hvm false) or HVM/PVH (hvm true)
// guest's state may hold (TSC info and the CPU policy belong to both);
// throws StreamError naming the other class's record, or an unknown type.
const char* check_state_record(std::uint32_t type, bool hvm);

} // namespace fastmig::xen
