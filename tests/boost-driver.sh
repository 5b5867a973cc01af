#! /bin/sh
# Automake test driver for Boost.Test programs: runs one test program and
# records one result per test case in the .trs file, so that the summary at
# the end of the run (tests/summary.sh) counts test cases, not programs.
# Interface: see "Custom Test Drivers" in the automake manual.
set -u
test_name= log_file= trs_file=
while test $# -gt 0; do
  case $1 in
    --test-name) test_name=$2; shift ;;
    --log-file) log_file=$2; shift ;;
    --trs-file) trs_file=$2; shift ;;
    --color-tests|--expect-failure|--enable-hard-errors) shift ;;
    --) shift; break ;;
    *) echo "$0: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

"$@" --log_level=test_suite --report_level=short --color_output=no >"$log_file" 2>&1
status=$?

# Leaving lines name every case that ran; error lines name the failed ones
# (their "in" path ends with the case name).
awk -v status="$status" -v trs="$trs_file" '
  /Leaving test case "/ {
    n = $0; sub(/.*Leaving test case "/, "", n); sub(/".*/, "", n); ran[n] = 1; order[++cnt] = n
  }
  /(error|fatal error): in "/ {
    f = $0; sub(/.*: in "/, "", f); sub(/".*/, "", f); k = split(f, parts, "/"); failed[parts[k]] = 1
  }
  /Test case .* is skipped|did not run because/ { skipped++ }
  END {
    bad = 0
    for (i = 1; i <= cnt; i++) {
      r = (order[i] in failed) ? "FAIL" : "PASS"
      if (r == "FAIL") bad++
      printf ":test-result: %s %s\n", r, order[i] >> trs
      printf "%s: %s\n", r, order[i]
    }
    for (f in failed) if (!(f in ran)) {
      bad++; printf ":test-result: FAIL %s (did not finish)\n", f >> trs; printf "FAIL: %s (did not finish)\n", f
    }
    if (status != 0 && bad == 0) {
      printf ":test-result: ERROR exit status %d\n", status >> trs; print "ERROR: exit status " status
      bad++
    }
    if (cnt == 0 && status == 0) {
      printf ":test-result: ERROR no test case ran\n" >> trs; print "ERROR: no test case ran"; bad++
    }
    printf ":global-test-result: %s\n", bad ? "FAIL" : "PASS" >> trs
    printf ":recheck: %s\n", bad ? "yes" : "no" >> trs
    printf ":copy-in-global-log: %s\n", bad ? "yes" : "no" >> trs
  }' "$log_file" | sed "s|^|$test_name: |"
exit 0
