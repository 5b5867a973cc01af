# Shared helpers for the integration tests (TAP output, one private sim
# directory per script, cleanup of every process a test started).
# Sourced by the test scripts; expects FASTMIG_BIN (set by `make check`).
set -u
: "${FASTMIG_BIN:?FASTMIG_BIN must point at the built fastmig (make check sets it)}"
FASTMIG_SIM_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fastmig-test.XXXXXX")
export FASTMIG_SIM_DIR
WORK=$FASTMIG_SIM_DIR/work
mkdir -p "$WORK"
tap_n=0
tap_failed=0

fm() { "$FASTMIG_BIN" "$@"; }

ok() {   # ok DESCRIPTION -- COMMAND...: runs COMMAND, reports its status
  desc=$1; shift; [ "$1" = "--" ] && shift
  tap_n=$((tap_n + 1))
  if "$@" >"$WORK/out.$tap_n" 2>&1; then
    echo "ok $tap_n - $desc"
  else
    echo "not ok $tap_n - $desc"
    sed 's/^/# /' "$WORK/out.$tap_n" | tail -n 30
    tap_failed=$((tap_failed + 1))
  fi
}

# json_get FILE KEY: a field of the JSON object on the last line of FILE.
json_get() {
  tail -n 1 "$1" | python3 -c 'import json,sys; v=json.load(sys.stdin)[sys.argv[1]]; print(json.dumps(v) if isinstance(v,(bool,type(None))) else v)' "$2"
}

cleanup() {
  # Destroy every sim domain this script created, then anything left over.
  for s in "$FASTMIG_SIM_DIR"/*.sock; do
    [ -e "$s" ] || continue
    id=$(basename "$s" .sock)
    "$FASTMIG_BIN" sim destroy "$id" >/dev/null 2>&1 || true
  done
  pkill -f "sim serve .*" -P $$ >/dev/null 2>&1 || true
  for pidf in "$WORK"/*.pid; do
    [ -e "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null || true
  done
  rm -rf "$FASTMIG_SIM_DIR"
}
trap cleanup EXIT

done_testing() {
  echo "1..$tap_n"
}
