#!/bin/bash
# The fastmig command as a user meets it: clear one-line errors and the right
# exit status for bad input, and send/receive as two separate commands, with
# the domain running on exactly one side whatever happens.
. "$(dirname "$0")/lib.sh"

no_command() {
  local rc=0
  fm >/dev/null 2>"$WORK/usage.err" || rc=$?
  [ $rc = 2 ] && grep -q "^usage: fastmig COMMAND" "$WORK/usage.err" && grep -q "demo" "$WORK/usage.err"
}
ok "no command: usage on stderr, exit 2" -- no_command
ok "help: usage on stdout, exit 0" -- bash -c '"$FASTMIG_BIN" help | grep -q "^usage: fastmig"'
ok "unknown command" -- expect_fail 2 "unknown command 'frobnicate'" fm frobnicate
ok "unknown option" -- expect_fail 2 "unknown option --bogus" fm demo --bogus
ok "bad size unit" -- expect_fail 2 "unknown unit" fm demo --memory 12Q
ok "size not a number" -- expect_fail 2 "is not a size" fm demo --memory lots
ok "unknown workload" -- expect_fail 2 "unknown workload 'nope'" fm demo --workload nope
ok "option without value" -- expect_fail 2 "needs a value" fm demo --memory
ok "bad domain id" -- expect_fail 2 "not a sim domain id" fm send abc 127.0.0.1:1
ok "bad address" -- expect_fail 2 "bad address\|bad port" fm send 1 nowhere
ok "missing sim domain" -- expect_fail 1 "sim domain 999 does not exist" fm send 999 127.0.0.1:9
ok "sim info of missing domain" -- expect_fail 1 "does not exist" fm sim info 4242
ok "receive without --listen" -- expect_fail 2 "needs --listen" fm receive

port_in_use() {
  local port; port=$(free_port)
  python3 -c 'import socket,sys,time; s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1]))); s.listen(); time.sleep(5)' "$port" &
  local py=$!
  wait_listen "$port" || return 1
  expect_fail 1 "cannot listen on 127.0.0.1:$port" fm receive --listen "127.0.0.1:$port"
  local rc=$?
  kill $py 2>/dev/null; wait $py 2>/dev/null
  return $rc
}
ok "port in use" -- port_in_use

sim_lifecycle() {
  local id; id=$(fm sim create --memory 64M --workload idle) || return 1
  fm sim list | grep -q "^$id " || { fm sim list; return 1; }
  fm sim info "$id" | grep -q "state: running" || return 1
  fm sim destroy "$id" || return 1
  ! fm sim list | grep -q "^$id "
}
ok "sim create, list, info, destroy" -- sim_lifecycle

send_receive() {
  local port id out dest
  port=$(free_port)
  id=$(fm sim create --memory 256M --workload web) || return 1
  fm receive --listen "127.0.0.1:$port" >"$WORK/recv.out" 2>&1 &
  echo $! >"$WORK/recv.pid"
  wait_listen "$port" || return 1
  out="$WORK/send.json"
  fm send "$id" "127.0.0.1:$port" --verify --json >"$out" || { cat "$out" "$WORK/recv.out"; return 1; }
  wait "$(cat "$WORK/recv.pid")" || { echo "receiver failed"; cat "$WORK/recv.out"; return 1; }
  [ "$(json_get "$out" verified)" = true ] || return 1
  # The source is gone, the destination runs.
  ! fm sim info "$id" >/dev/null 2>&1 || { echo "source still exists"; return 1; }
  dest=$(sed -n 's/.* as \(sim:[0-9]*\):.*/\1/p' "$WORK/recv.out")
  [ -n "$dest" ] || { cat "$WORK/recv.out"; return 1; }
  fm sim info "$dest" | grep -q "state: running" || { fm sim info "$dest"; return 1; }
  fm sim info "$dest" | grep -q "workload: web" || return 1
  fm sim destroy "$dest"
}
ok "send and receive as two commands, verified, source released" -- send_receive

refused() {
  local port id
  port=$(free_port)
  id=$(fm sim create --memory 256M --workload idle) || return 1
  fm receive --listen "127.0.0.1:$port" --max-memory 64M >/dev/null 2>"$WORK/recv.err" &
  local rpid=$!
  wait_listen "$port" || return 1
  expect_fail 1 "refused the domain: .*exceeds" fm send "$id" "127.0.0.1:$port" || return 1
  wait $rpid && return 1  # the receiver reports the refusal too
  fm sim info "$id" | grep -q "state: running" || return 1
  fm sim destroy "$id"
}
ok "destination refuses (memory): source keeps running" -- refused

# Without --max-memory the limit is this host's RAM: a guest larger than it
# (a sparse sim guest) is refused before any page, not half received.
refused_by_default() {
  local port id gib
  port=$(free_port)
  gib=$(awk '/^MemTotal:/ { print int($2 / 1048576) + 2 }' /proc/meminfo)
  id=$(fm sim create --memory "${gib}G" --workload idle) || return 1
  fm receive --listen "127.0.0.1:$port" >/dev/null 2>"$WORK/recv.err" &
  local rpid=$!
  wait_listen "$port" || return 1
  expect_fail 1 "refused the domain: .*exceeds the receiver's limit" fm send "$id" "127.0.0.1:$port" || return 1
  wait $rpid && return 1
  fm sim info "$id" | grep -q "state: running" || return 1
  fm sim destroy "$id"
}
ok "destination refuses a guest larger than its RAM by default" -- refused_by_default

# A receiver whose address space cannot map the guest (ulimit -v) refuses it
# in negotiate, before any page: not a broken pipe halfway through round 0.
refused_address_space() {
  local port id
  port=$(free_port)
  id=$(fm sim create --memory 256M --workload web --rate-scale 0) || return 1
  (ulimit -v $((160 * 1024)); exec "$FASTMIG_BIN" receive --listen "127.0.0.1:$port") >/dev/null 2>"$WORK/recv.err" &
  local rpid=$!
  wait_listen "$port" || return 1
  expect_fail 1 "negotiate: the destination refused the domain: .*Cannot allocate memory.*keeps running" \
    fm send "$id" "127.0.0.1:$port" || { cat "$WORK/recv.err"; return 1; }
  wait $rpid && return 1
  grep -q "negotiate: refused the domain" "$WORK/recv.err" || { cat "$WORK/recv.err"; return 1; }
  fm sim info "$id" | grep -q "state: running" || return 1
  fm sim destroy "$id"
}
if [ -n "${FASTMIG_SANITIZER:-}" ]; then
  # ASan/TSan map terabytes of shadow memory: under ulimit -v the receiver
  # dies before main (make faults runs this case as dst-address-space).
  tap_n=$((tap_n + 1))
  echo "ok $tap_n - destination refuses a guest its address space cannot map (ulimit -v) # SKIP $FASTMIG_SANITIZER build"
else
  ok "destination refuses a guest its address space cannot map (ulimit -v)" -- refused_address_space
fi

not_fastmig_peer() {
  local port id
  port=$(free_port)
  id=$(fm sim create --memory 64M --workload idle) || return 1
  rm -f "$WORK/http.ready"
  python3 -c '
import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1",int(sys.argv[1]))); s.listen()
open(sys.argv[2], "w").close()
c,_=s.accept(); c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n"); c.recv(65536); c.close()' "$port" "$WORK/http.ready" &
  local py=$!
  wait_file "$WORK/http.ready" || return 1
  expect_fail 1 "not a fastmig receiver" fm send "$id" "127.0.0.1:$port" || return 1
  wait $py
  fm sim info "$id" | grep -q "state: running" || return 1
  fm sim destroy "$id"
}
ok "peer that is not fastmig (sender side)" -- not_fastmig_peer

not_fastmig_sender() {
  local port
  port=$(free_port)
  fm receive --listen "127.0.0.1:$port" >/dev/null 2>"$WORK/recv2.err" &
  local rpid=$!
  wait_listen "$port" || return 1
  python3 -c 'import socket,sys; c=socket.create_connection(("127.0.0.1",int(sys.argv[1]))); c.sendall(b"GET / HTTP/1.0\r\n\r\n"); c.close()' "$port"
  local rc=0
  wait $rpid || rc=$?
  [ $rc = 1 ] || { echo "receiver exit $rc"; return 1; }
  grep -q "not a fastmig sender" "$WORK/recv2.err" || { cat "$WORK/recv2.err"; return 1; }
  [ -z "$(ls "$FASTMIG_SIM_DIR"/*.sock 2>/dev/null)" ] || { echo "a domain was left behind"; return 1; }
}
ok "peer that is not fastmig (receiver side)" -- not_fastmig_sender

migrate_twice() {
  # A migrated guest really runs at the destination: migrated on again, it
  # has dirtied memory during the second migration's first round.
  local port id mid out
  id=$(fm sim create --memory 256M --workload dpdk) || return 1
  for hop in 1 2; do
    port=$(free_port)
    fm receive --listen "127.0.0.1:$port" >"$WORK/hop$hop.out" 2>&1 &
    local rpid=$!
    wait_listen "$port" || return 1
    out="$WORK/hop$hop.json"
    fm send "$id" "127.0.0.1:$port" --verify --json >"$out" || { cat "$out" "$WORK/hop$hop.out"; return 1; }
    wait $rpid || return 1
    [ "$(json_get "$out" verified)" = true ] || return 1
    id=$(sed -n 's/.* as \(sim:[0-9]*\):.*/\1/p' "$WORK/hop$hop.out")
  done
  python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).read().splitlines()[-1]); assert r["round_stats"][0]["dirty_after"] > 0, r["round_stats"]' "$WORK/hop2.json" || return 1
  fm sim info "$id" | grep -q "state: running" || return 1
  fm sim destroy "$id"
}
ok "a migrated guest runs: migrated again, verified, it kept writing" -- migrate_twice

nobody_listening() {
  local id port
  port=$(free_port)
  id=$(fm sim create --memory 64M --workload idle) || return 1
  expect_fail 1 "cannot connect to 127.0.0.1:$port.*keeps running" fm send "$id" "127.0.0.1:$port" || return 1
  fm sim info "$id" | grep -q "state: running" || return 1
  fm sim destroy "$id"
}
ok "nothing listening: clear error, source keeps running" -- nobody_listening

done_testing
