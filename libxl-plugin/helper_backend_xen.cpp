// The Xen backend of the helper.  The Domain implementation for real Xen
// domains lives in stream/domain/xen/ (issue 6, written separately); until
// it is part of this build, the helper refuses Xen domains with a clear
// error, which libxl reports and `xl save`/`xl migrate` fail cleanly on: the
// domain keeps running (the helper fails before asking libxl to suspend it).
//
// When stream/domain/xen/ lands, this file becomes the adapter: open_source
// attaches the Xen Domain for `domid`, needs_qemu_logdirty is true for HVM
// guests with a device model, provider() fills libxl's already created
// domain (RestoreParams carries the xenstore/console event channels), and
// restore_results returns the store and console frames it set up.
#include "libxl-plugin/helper_backend.hpp"

#include "config.h"

namespace fastmig::helper {

std::unique_ptr<HelperBackend> make_xen_backend()
{
#ifdef FASTMIG_HAVE_XEN
    throw Error("the Xen backend is not built/available in this fastmig: the Xen libraries are present but "
                "stream/domain/xen/ is not part of this build yet; use the stock libxl-save-helper "
                "(unset LIBXL_SAVE_HELPER or 'make uninstall-xl-helper')");
#else
    throw Error("the Xen backend is not built/available in this fastmig (configured without the Xen libraries: "
                "apt-get install libxen-dev and rebuild); use the stock libxl-save-helper");
#endif
}

} // namespace fastmig::helper
