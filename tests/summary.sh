#! /bin/sh
# Sums every test result of the last `make check` (all .trs files under the
# build tree) and prints the closing line CI reads: "N passed, N failed, N skipped".
# Exit status: 0 when nothing failed and something ran.
set -u
dir=${1:-.}
# Only this build's results: not those of a sanitizer build (sanitize/) or
# of a distcheck tree (fastmig-VERSION/) that may sit inside it.
files=$(find "$dir" \( -path "$dir/sanitize" -o -path "$dir/fastmig-*" \) -prune -o -name '*.trs' -print 2>/dev/null)
if test -z "$files"; then
  echo "0 passed, 1 failed, 0 skipped"
  echo "summary: no test results found under $dir" >&2
  exit 1
fi
cat $files | awk '
  /^:test-result: PASS/ || /^:test-result: XFAIL/ { p++ }
  /^:test-result: FAIL/ || /^:test-result: ERROR/ || /^:test-result: XPASS/ { f++ }
  /^:test-result: SKIP/ { s++ }
  END { printf "%d passed, %d failed, %d skipped\n", p, f, s; exit (f > 0 || p == 0) ? 1 : 0 }'
