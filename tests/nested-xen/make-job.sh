#!/bin/bash
# make-job.sh: make the job disk that dom0 of the nested Xen host runs.
#
#   make-job.sh IMAGE_DIR OUT.img [NAME=VALUE ...]
#
# The disk (ext4, made with mkfs.ext4 -d, no loop mount) holds:
#   run.sh             the dom0 test (job/run.sh)
#   params             NAME=VALUE lines given here (see job/run.sh)
#   guest-initrd.img   the PV test guest's root: busybox + xen-netfront.ko
#                      from the image (they must match its kernel), our
#                      guest/init and guest/memwriter (compiled here, static),
#                      guest/memload + guest/loadsvc (the after-load
#                      workload), and fastmig-guest-agent (built here from
#                      guest-agent/, static) with the modules it needs,
#                      xen-evtchn.ko and xen-gntalloc.ko, read out of the
#                      image's rootfs.img with debugfs (no image rebuild)
#   results/           empty; dom0 writes into it, the host reads it back
#                      with debugfs (boot.sh)
#   fastmig/           only with FASTMIG_HELPER_BIN set (nested-check.sh sets
#                      it to this tree's build when it exists): fastmig's
#                      libxl-save-helper, the libraries it needs that the
#                      image lacks (lib/), and helper.sh, the program dom0's
#                      LIBXL_SAVE_HELPER names. The Xen libraries come from
#                      the image, so the helper must be built for its Xen
#                      (checked: libxenctrl.so.X.Y against the image's
#                      xen-version). The other libraries are those the
#                      build host's ldd finds, or with FASTMIG_HELPER_LIBS
#                      set, that directory's (a helper built in another
#                      suite's chroot: build-in-trixie.sh).
#   (FASTMIG_NESTED_JOB=xapi, make nested-xapi: run.sh is job/xapi.sh, and
#   fastmig/ holds FASTMIG_EMU_BIN and FASTMIG_FAKE_XENOPSD_BIN, the
#   XenServer drop-in and the fake xenopsd on Xen, with their libraries)
#   libxl/             only with FASTMIG_LIBXL_SO set: a libxenlight.so.4.17.0
#                      built by xen-patches/build-libxl.sh; dom0 binds it
#                      over the package's library for the whole job
#                      (job/run.sh), and LIBXL_EARLY_NICS chooses per step
#                      whether its patch acts.
# It is rebuilt every run: it is small and cheap (about a second).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf '[make-job %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $# -ge 2 ]] || die "usage: make-job.sh IMAGE_DIR OUT.img [NAME=VALUE ...]"
img=$1 out=$2
shift 2
[[ -f $img/.done ]] || die "$img is not a built image (run build-image.sh)"
for t in gcc cpio gzip mkfs.ext4 debugfs make; do
  command -v "$t" >/dev/null || die "missing tool '$t'"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The guest's root filesystem, as an initramfs.
g=$work/guest
mkdir -p "$g"/{bin,proc,sys,dev,tmp,lib/modules}
cp "$img/guest-parts/busybox" "$g/bin/busybox"
[[ -f $img/guest-parts/xen-netfront.ko ]] && cp "$img/guest-parts/xen-netfront.ko" "$g/lib/modules/"
gcc -O2 -static -Wall -Wextra -o "$g/bin/memwriter" "$here/guest/memwriter.c" \
  || die "compiling memwriter failed (static glibc comes with libc6-dev)"
gcc -O2 -static -Wall -Wextra -o "$g/bin/memload" "$here/guest/memload.c" || die "compiling memload failed"
install -m 0755 "$here/guest/loadsvc" "$g/bin/loadsvc"
install -m 0755 "$here/guest/init" "$g/init"
# The free-page hint agent and its modules (the image's kernel's).
make -s -C "$here/../../guest-agent" fastmig-guest-agent >&2 \
  || die "building guest-agent/fastmig-guest-agent failed (static Xen libraries: libxen-dev)"
install -m 0755 "$here/../../guest-agent/fastmig-guest-agent" "$g/bin/fastmig-guest-agent"
kver=$(cat "$img/kernel-version")
# Debian 12 ships them as .ko, Debian 13 as .ko.xz (busybox's insmod in the
# guest takes them uncompressed); one built into the kernel needs no file.
for m in xen-evtchn xen-gntalloc; do
  d=/lib/modules/$kver/kernel/drivers/xen/$m.ko
  for z in "" .xz .zst; do
    debugfs -R "dump $d$z $work/$m.ko$z" "$img/rootfs.img" >/dev/null 2>&1
    [[ -s $work/$m.ko$z ]] || continue
    case $z in
      "") mv "$work/$m.ko" "$g/lib/modules/$m.ko" ;;
      .xz) xz -dc "$work/$m.ko$z" >"$g/lib/modules/$m.ko" ;;
      .zst) zstd -qdc "$work/$m.ko$z" >"$g/lib/modules/$m.ko" ;;
    esac
    break
  done
  [[ -s $g/lib/modules/$m.ko ]] && continue
  debugfs -R "cat /lib/modules/$kver/modules.builtin" "$img/rootfs.img" 2>/dev/null \
    | grep -qx "kernel/drivers/xen/$m.ko" \
    || die "$m.ko (.xz, .zst) not found in $img/rootfs.img, nor built into kernel $kver"
done

j=$work/job
mkdir -p "$j/results"
(cd "$g" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) >"$j/guest-initrd.img"
install -m 0755 "$here/job/run.sh" "$j/run.sh"
install -m 0644 "$here/job/xen-up.sh" "$j/xen-up.sh"
: >"$j/params"
for kv in "$@"; do
  [[ $kv =~ ^[A-Z_][A-Z0-9_]*=[-A-Za-z0-9_.,/\ ]*$ ]] || die "bad parameter '$kv' (NAME=VALUE)"
  printf '%s="%s"\n' "${kv%%=*}" "${kv#*=}" >>"$j/params"
done

if [[ -n ${FASTMIG_HELPER_BIN:-} ]]; then
  [[ -x $FASTMIG_HELPER_BIN ]] || die "FASTMIG_HELPER_BIN=$FASTMIG_HELPER_BIN is not an executable"
  # objdump, not ldd: a helper built for another suite may not load here.
  xc=$(objdump -p "$FASTMIG_HELPER_BIN" | awk '$1 == "NEEDED" && $2 ~ /^libxenctrl\.so/ { print $2 }')
  [[ -n $xc ]] || die "$FASTMIG_HELPER_BIN is not linked with the Xen libraries (configure found no libxen-dev?)"
  xv=$(cat "$img/xen-version" 2>/dev/null || echo 4.17)
  [[ $xc == "libxenctrl.so.$xv" ]] \
    || die "$FASTMIG_HELPER_BIN needs $xc but the image has Xen $xv (build-in-trixie.sh builds for 4.20)"
  mkdir -p "$j/fastmig/lib"
  install -m 0755 "$FASTMIG_HELPER_BIN" "$j/fastmig/libxl-save-helper"
  # Everything but glibc and Xen's own libraries, which dom0 has.
  if [[ -n ${FASTMIG_HELPER_LIBS:-} ]]; then
    cp -L "$FASTMIG_HELPER_LIBS"/* "$j/fastmig/lib/" || die "cannot copy FASTMIG_HELPER_LIBS=$FASTMIG_HELPER_LIBS"
  else
    ldd "$FASTMIG_HELPER_BIN" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' \
      | grep -Ev '/(libc|libm|libxen[a-z]*|ld-linux[-a-z0-9_]*)\.so' \
      | while read -r lib; do cp -L "$lib" "$j/fastmig/lib/"; done
  fi
  cat >"$j/fastmig/helper.sh" <<'EOS'
#!/bin/sh
# What LIBXL_SAVE_HELPER names in dom0: fastmig's helper with its libraries.
LD_LIBRARY_PATH=/job/fastmig/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
exec /job/fastmig/libxl-save-helper "$@"
EOS
  chmod 0755 "$j/fastmig/helper.sh"
  log "fastmig helper $FASTMIG_HELPER_BIN with $(ls "$j/fastmig/lib" | tr '\n' ' ')"
fi

if [[ ${FASTMIG_NESTED_JOB:-run} == xapi ]]; then
  install -m 0755 "$here/job/xapi.sh" "$j/run.sh"
  mkdir -p "$j/fastmig/lib"
  for b in "${FASTMIG_EMU_BIN:-}" "${FASTMIG_FAKE_XENOPSD_BIN:-}"; do
    [[ -x $b ]] || die "FASTMIG_NESTED_JOB=xapi needs FASTMIG_EMU_BIN and FASTMIG_FAKE_XENOPSD_BIN (make nested-xapi)"
    install -m 0755 "$b" "$j/fastmig/"
    ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' \
      | grep -Ev '/(libc|libm|libxen[a-z]*|ld-linux[-a-z0-9_]*)\.so' \
      | while read -r lib; do cp -L "$lib" "$j/fastmig/lib/"; done
  done
  log "xapi job: $(ls "$j/fastmig" | tr '\n' ' ')"
elif [[ ${FASTMIG_NESTED_JOB:-run} != run ]]; then
  die "FASTMIG_NESTED_JOB=$FASTMIG_NESTED_JOB is not a job (run, xapi)"
fi

if [[ -n ${FASTMIG_LIBXL_SO:-} ]]; then
  [[ -f $FASTMIG_LIBXL_SO ]] || die "FASTMIG_LIBXL_SO=$FASTMIG_LIBXL_SO is not a file"
  objdump -p "$FASTMIG_LIBXL_SO" | grep -q 'SONAME *libxenlight\.so\.4\.17$' \
    || die "FASTMIG_LIBXL_SO=$FASTMIG_LIBXL_SO is not a libxenlight.so.4.17"
  mkdir -p "$j/libxl"
  install -m 0644 "$FASTMIG_LIBXL_SO" "$j/libxl/libxenlight.so.4.17.0"
  log "patched libxl $FASTMIG_LIBXL_SO"
fi

# Room for results (ping logs at 1 kHz are the bulk); sparse on the host.
rm -f "$out"
mkfs.ext4 -q -F -L fastmigjob -d "$j" "$out" 512M >/dev/null || die "mkfs.ext4 -d failed"
log "job disk $out ($(du -h "$j/guest-initrd.img" | cut -f1) guest initrd; params: $*)"
