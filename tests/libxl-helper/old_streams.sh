#!/bin/sh
# Every recorded stream of an older (or the current) fastmig version in
# tests/data/streams/ is received by this build: restored through the
# helper into a sim guest whose memory matches the recorded checksum, and
# libxl's records after it left intact.  TAP.
. "${top_srcdir:-.}/tests/integration/lib.sh"
B=$(dirname "$FASTMIG_BIN")
D=${top_srcdir:-.}/tests/data/streams
export FASTMIG_HELPER_BACKEND=sim FASTMIG_PEERS=$WORK/no-peers-file
restore_old() {  # restore_old FILE CHECKSUM
  gzip -dc "$D/$1" >"$WORK/old.img" || return 1
  "$B/tests/libxl-helper/fake_libxl" --helper "$B/libxl-plugin/libxl-save-helper" --io "$WORK/old.img" restore \
    >"$WORK/old.out" 2>&1 || { cat "$WORK/old.out"; return 1; }
  cat "$WORK/old.out"
  id=$(fm sim list | awk '$NF == "incoming" {print $1}')
  grep -q "restore: complete retval=0" "$WORK/old.out" && grep -q "libxl suffix intact" "$WORK/old.out" &&
    [ -n "$id" ] && [ "$(fm sim checksum "$id")" = "$2" ] && fm sim destroy "$id" >/dev/null
}
grep -v '^#' "$D/manifest" | while read -r file version sum; do
  echo "$file $version $sum"
done >"$WORK/list"
while read -r file version sum; do
  ok "stream version $version recorded in $file: received, memory as recorded" -- restore_old "$file" "$sum"
done <"$WORK/list"
[ "$tap_n" -ge 2 ] || { tap_n=$((tap_n + 1)); echo "not ok $tap_n - tests/data/streams/manifest lists the recorded streams"; }
done_testing
exit 0
