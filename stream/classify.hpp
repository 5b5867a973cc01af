// Page classification.  Today: zero or not (ISA-L's isal_zero_detect, which
// dispatches to the widest vector unit at run time).  Later issues add free
// pages, XBZRLE candidates and compressibility.
#pragma once

#include "stream/types.hpp"

#include <cstdint>

namespace fastmig {

bool is_zero_page(const std::uint8_t* page);

} // namespace fastmig
