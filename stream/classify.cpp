#include "stream/classify.hpp"

#include <isa-l/mem_routines.h>

namespace fastmig {

bool is_zero_page(const std::uint8_t* page)
{
    return isal_zero_detect(const_cast<std::uint8_t*>(page), kPageSize) == 0;
}

} // namespace fastmig
