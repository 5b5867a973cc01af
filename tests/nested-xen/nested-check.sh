#!/bin/bash
# nested-check.sh: the whole nested-Xen test from one command:
# build (or reuse) the image, make the job disk, boot the nested host under
# QEMU, collect and summarise the results.
#
#   nested-check.sh [NAME=VALUE ...]     (job parameters, see job/run.sh)
# Env: FASTMIG_NESTED_CACHE   image cache (default /var/cache/fastmig-nested)
#      FASTMIG_NESTED_OUT     where this run's logs and results go
#                             (default $FASTMIG_NESTED_CACHE/runs/<time>)
#      FASTMIG_NESTED_ACCEL   tcg (default) or kvm
#      FASTMIG_NESTED_MEM     nested host RAM in MiB (default 4096)
#      FASTMIG_NESTED_TIMEOUT job time limit in s (default 5400)
#      FASTMIG_HELPER_BIN     fastmig's libxl-save-helper to test beside the
#                             stock one (make nested-check sets it to this
#                             build's, when built with the Xen libraries)
#      FASTMIG_NESTED_XEN     boot this hypervisor instead of the image's
#                             (build-xen-shadow.sh's directory; boot.sh)
#      FASTMIG_LIBXL_SO       a patched libxenlight.so.4.17.0 for dom0
#                             (xen-patches/build-libxl.sh; make nested-libxl);
#                             HELPERS may then name stock-early and
#                             fastmig-late (job/run.sh)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${FASTMIG_NESTED_CACHE:-/var/cache/fastmig-nested}
out=${FASTMIG_NESTED_OUT:-$cache/runs/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
t0=$SECONDS
img=$(bash "$here/build-image.sh")
echo "image $((SECONDS - t0))s" >"$out/step-timings.txt"
bash "$here/make-job.sh" "$img" "$out/job.img" "$@"
t1=$SECONDS
bash "$here/boot.sh" -a "${FASTMIG_NESTED_ACCEL:-tcg}" -m "${FASTMIG_NESTED_MEM:-4096}" \
  -t "${FASTMIG_NESTED_TIMEOUT:-5400}" "$img" "$out/job.img" "$out"
echo "boot+job $((SECONDS - t1))s" >>"$out/step-timings.txt"
bash "$here/summarize.sh" "$out/results/results.tsv" | tee "$out/summary.txt"
# The job disk is mostly empty space; the results are already copied out.
rm -f "$out/job.img"
echo "nested-check: results in $out"
