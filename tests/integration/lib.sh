# Shared helpers for the integration tests (TAP output, one private sim
# directory per script, cleanup of every process a test started).
# Sourced by the test scripts; expects FASTMIG_BIN (set by `make check`).
set -u
: "${FASTMIG_BIN:?FASTMIG_BIN must point at the built fastmig (make check sets it)}"
FASTMIG_SIM_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fastmig-test.XXXXXX")
export FASTMIG_SIM_DIR
# The receivers' outcome records (docs/stream-format.md) stay in the test's directory.
export FASTMIG_OUTCOME_DIR=$FASTMIG_SIM_DIR/outcomes
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

# Helpers for tests that run send and receive as separate commands.
wait_file() { for _ in $(seq 100); do [ -e "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1"; return 1; }
# wait_listen PORT: until something listens on 127.0.0.1:PORT (read from /proc, no connection made).
wait_listen() {
  local hex; hex=$(printf '%04X' "$1")
  for _ in $(seq 100); do grep -q ":$hex 00000000:0000 0A" /proc/net/tcp && return 0; sleep 0.1; done
  echo "nothing listens on port $1"; return 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# expect_fail STATUS PATTERN COMMAND...: COMMAND exits STATUS and its stderr
# is one line matching PATTERN.
expect_fail() {
  local want=$1 pat=$2; shift 2
  local err="$WORK/err.$$.$RANDOM" rc=0
  "$@" >/dev/null 2>"$err" || rc=$?
  [ "$rc" = "$want" ] || { echo "exit $rc, wanted $want"; cat "$err"; return 1; }
  grep -q -- "$pat" "$err" || { echo "stderr lacks '$pat':"; cat "$err"; return 1; }
  [ "$(grep -c '' "$err")" -le 3 ] || { echo "error is not short:"; cat "$err"; return 1; }
}

done_testing() {
  echo "1..$tap_n"
}
