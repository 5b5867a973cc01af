#!/bin/bash
# Authenticated channels (--psk-file; docs/stream-format.md, Authentication)
# with the real fastmig on loopback: the right key migrates bit-exact; a
# wrong key, or a key on one side only, is refused in phase "authenticate"
# before the destination builds anything, and the source keeps running; a
# byte flipped on the wire is an authentication failure; with a cipher
# (docs/stream-format.md, Encryption) guest memory is absent from the
# captured wire bytes, present with --cipher none.
. "$(dirname "$0")/lib.sh"

K1=$WORK/k1 K2=$WORK/k2
fm keygen "$K1" && fm keygen "$K2" || { echo "Bail out! fastmig keygen failed"; exit 1; }

keygen_file() {
  [ "$(stat -c %a "$K1")" = 600 ] || return 1
  grep -qE '^[0-9a-f]{64}$' "$K1" || return 1
  ! cmp -s "$K1" "$K2" || return 1
  expect_fail 1 "never overwritten" fm keygen "$K1"
}
ok "keygen: 32 random bytes in hex, mode 0600, never overwrites" -- keygen_file

open_key() {
  cp "$K1" "$WORK/open"; chmod 644 "$WORK/open"
  expect_fail 2 "permissions 0644 are too open" fm send 1 127.0.0.1:1 --psk-file "$WORK/open" || return 1
  expect_fail 2 "FASTMIG_PSK_FILE: .*too open" env FASTMIG_PSK_FILE="$WORK/open" "$FASTMIG_BIN" receive --listen 127.0.0.1:0 || return 1
  printf 'zz\n' > "$WORK/bad"; chmod 600 "$WORK/bad"
  expect_fail 2 "must be hexadecimal" fm demo --psk-file "$WORK/bad"
}
ok "key file readable by others, or not hex: refused" -- open_key

# migrate SEND_KEY RECV_KEY [send options]: a 128M sim guest from sender to
# receiver; "-" is no key.  Leaves $WORK/send.err, $WORK/recv.err, $id, $rc.
migrate() {
  local skey=$1 rkey=$2; shift 2
  local port sargs=() rargs=()
  [ "$skey" = - ] || sargs=(--psk-file "$skey")
  [ "$rkey" = - ] || rargs=(--psk-file "$rkey")
  port=$(free_port)
  id=$(fm sim create --memory 128M --workload web) || return 1
  fm receive --listen "127.0.0.1:$port" "${rargs[@]}" --timeout-ms 5000 >"$WORK/recv.out" 2>"$WORK/recv.err" &
  local rpid=$!
  wait_listen "$port" || return 1
  rc=0
  fm send "$id" "127.0.0.1:$port" "${sargs[@]}" --verify --json --timeout-ms 5000 "$@" >"$WORK/send.json" 2>"$WORK/send.err" || rc=$?
  rrc=0
  wait $rpid || rrc=$?
}

# The source runs, and it is the only sim domain: the destination never built one.
source_alone() {
  fm sim info "$id" | grep -q "state: running" || { fm sim info "$id"; return 1; }
  [ "$(fm sim list | grep -c '^sim:')" = 1 ] || { fm sim list; return 1; }
  fm sim destroy "$id"
}

right_key() {
  migrate "$K1" "$K1" --channels 3 --compress igzip --xbzrle-cache 16M || true
  [ $rc = 0 ] && [ $rrc = 0 ] || { cat "$WORK/send.err" "$WORK/recv.err"; return 1; }
  [ "$(json_get "$WORK/send.json" verified)" = true ] || { cat "$WORK/send.json"; return 1; }
  [ "$(json_get "$WORK/send.json" channels)" = 3 ] || return 1
  local dest; dest=$(sed -n 's/.* as \(sim:[0-9]*\):.*/\1/p' "$WORK/recv.out")
  fm sim info "$dest" | grep -q "state: running" || return 1
  fm sim destroy "$dest"
}
ok "same key, 3 channels, igzip, XBZRLE: verified bit-exact" -- right_key

# refused SEND_KEY RECV_KEY SEND_PATTERN RECV_PATTERN [send options]: both
# commands fail with one line matching their pattern, nothing is built at
# the destination, and the source runs.
refused() {
  refused_check "$@" && return 0
  # A failed case must not leave its domains to the next one's count.
  local s; for s in $(fm sim list | sed -n 's/^\(sim:[0-9]*\).*/\1/p'); do fm sim destroy "$s" >/dev/null 2>&1; done
  return 1
}
refused_check() {
  local skey=$1 rkey=$2 spat=$3 rpat=$4; shift 4
  migrate "$skey" "$rkey" "$@" || true
  [ $rc = 1 ] && [ $rrc = 1 ] || { echo "send $rc receive $rrc"; cat "$WORK/send.err" "$WORK/recv.err"; return 1; }
  grep -q "$spat" "$WORK/send.err" || { cat "$WORK/send.err"; return 1; }
  grep -q "$rpat" "$WORK/recv.err" || { cat "$WORK/recv.err"; return 1; }
  [ "$(grep -c '' "$WORK/send.err")" = 1 ] && [ "$(grep -c '' "$WORK/recv.err")" = 1 ] || return 1
  source_alone
}
ok "wrong key: both sides fail in 'authenticate', nothing built, source runs" -- refused "$K1" "$K2" \
  "sim:[0-9]*: authenticate: the destination's proof does not verify: it holds a different key.*keeps running" \
  "incoming: authenticate: .*key differs" --channels 2
ok "key at the source only: refused in 'authenticate', source runs" -- refused "$K1" - \
  "authenticate: the destination refused to authenticate: this destination has no pre-shared key.*keeps running" \
  "authenticate: this destination has no pre-shared key"
ok "key at the destination only: refused in 'authenticate', source runs" -- refused - "$K1" \
  "authenticate: the destination refused: this destination requires authentication.*keeps running" \
  "authenticate: this destination requires authentication"

# relay PORT RPORT FLIP_AT CAPTURE: forwards connections from PORT to the
# receiver on RPORT; flips one byte of the source's stream at offset
# FLIP_AT of the first connection (-1: none) and writes what the source
# sent on that connection to CAPTURE.  Its pid goes to $WORK/relay.pid.
relay() {
  python3 - "$@" <<'EOF' &
import socket, sys, threading
port, rport, at, capture = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port)); ls.listen(8); ls.settimeout(20)
def pump(a, b, first):
    # Forward a to b; once b is gone keep draining a, so the source is not
    # cut off before it reads the destination's DONE on the other direction.
    seen, alive = 0, True
    out = open(capture, "wb") if first else None
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            if out: out.write(d)
            if first and seen <= at < seen + len(d):
                d = bytearray(d); d[at - seen] ^= 0x01; d = bytes(d)
            seen += len(d)
            if alive:
                try: b.sendall(d)
                except OSError: alive = False
    except OSError: pass
    if out: out.close()
    try: b.shutdown(socket.SHUT_WR)
    except OSError: pass
first = True
try:
    while True:
        c, _ = ls.accept()
        u = socket.create_connection(("127.0.0.1", rport))
        threading.Thread(target=pump, args=(c, u, first), daemon=True).start()
        threading.Thread(target=pump, args=(u, c, False), daemon=True).start()
        first = False
except OSError: pass
EOF
  echo $! > "$WORK/relay.pid"
}

# A byte flipped well inside page data of the first connection, with
# --cipher CIPHER at both ends (a key always).
flipped_byte() {
  local cipher=$1 port rport id
  port=$(free_port); rport=$(free_port)
  id=$(fm sim create --memory 128M --workload web) || return 1
  fm receive --listen "127.0.0.1:$rport" --psk-file "$K1" --cipher "$cipher" --timeout-ms 5000 >/dev/null 2>"$WORK/recv.err" &
  local rpid=$!
  wait_listen "$rport" || return 1
  relay "$port" "$rport" 300000 "$WORK/wire.bin"
  local relay_pid; relay_pid=$(cat "$WORK/relay.pid")
  wait_listen "$port" || return 1
  expect_fail 1 "destination gave up: page_batch: authentication failed.*keeps running" fm send "$id" "127.0.0.1:$port" --psk-file "$K1" --cipher "$cipher" --timeout-ms 5000 || return 1
  local rrc=0; wait $rpid || rrc=$?
  kill "$relay_pid" 2>/dev/null; wait "$relay_pid" 2>/dev/null
  [ $rrc = 1 ] || { echo "receiver exit $rrc"; return 1; }
  grep -q "receive: page_batch: authentication failed: the tag of \(encrypted \)\?record" "$WORK/recv.err" || { cat "$WORK/recv.err"; return 1; }
  grep -q "incoming domain was destroyed" "$WORK/recv.err" || { cat "$WORK/recv.err"; return 1; }
  fm sim info "$id" | grep -q "state: running" || return 1
  [ "$(fm sim list | grep -c '^sim:')" = 1 ] || { fm sim list; return 1; }
  fm sim destroy "$id"
}
ok "a byte flipped on the wire, authenticated in clear: refused, copy destroyed, source runs" -- flipped_byte none
ok "a byte flipped on the wire, AES-256-GCM: refused, copy destroyed, source runs" -- flipped_byte aes-256-gcm
ok "a byte flipped on the wire, ChaCha20-Poly1305: refused, copy destroyed, source runs" -- flipped_byte chacha20-poly1305

# What crosses the wire: a web guest's pages (uncompressed: --compress none)
# hold HTTP text.  With --cipher none it is readable in the captured bytes
# of the first connection; encrypted, it is not, and the migration is
# verified bit-exact all the same.  WANT is "clear" or "hidden".
wire_capture() {
  local cipher=$1 want=$2 port rport id
  port=$(free_port); rport=$(free_port)
  id=$(fm sim create --memory 128M --workload web) || return 1
  fm receive --listen "127.0.0.1:$rport" --psk-file "$K1" --cipher "$cipher" --timeout-ms 5000 >"$WORK/recv.out" 2>"$WORK/recv.err" &
  local rpid=$!
  wait_listen "$rport" || return 1
  relay "$port" "$rport" -1 "$WORK/wire-$cipher.bin"
  local relay_pid; relay_pid=$(cat "$WORK/relay.pid")
  wait_listen "$port" || return 1
  local rc=0
  fm send "$id" "127.0.0.1:$port" --psk-file "$K1" --cipher "$cipher" --channels 1 --compress none --verify --json \
    --timeout-ms 5000 >"$WORK/send.json" 2>"$WORK/send.err" || rc=$?
  local rrc=0; wait $rpid || rrc=$?
  kill "$relay_pid" 2>/dev/null; wait "$relay_pid" 2>/dev/null
  [ $rc = 0 ] && [ $rrc = 0 ] || { cat "$WORK/send.err" "$WORK/recv.err"; return 1; }
  [ "$(json_get "$WORK/send.json" verified)" = true ] || { cat "$WORK/send.json"; return 1; }
  local size hits
  size=$(stat -c %s "$WORK/wire-$cipher.bin")
  [ "$size" -gt 10000000 ] || { echo "captured only $size bytes"; return 1; }
  hits=$(grep -a -c "Cache-Control: max-age=3600" "$WORK/wire-$cipher.bin" || true)
  echo "$cipher: $size bytes captured, $hits lines with the pattern"
  rm -f "$WORK/wire-$cipher.bin"
  if [ "$want" = clear ]; then [ "$hits" -gt 100 ] || return 1; else [ "$hits" = 0 ] || return 1; fi
  local dest; dest=$(sed -n 's/.* as \(sim:[0-9]*\):.*/\1/p' "$WORK/recv.out")
  fm sim destroy "$dest"
}
ok "wire capture, --cipher none: guest text readable on the wire" -- wire_capture none clear
ok "wire capture, AES-256-GCM: verified bit-exact, guest text absent from the wire" -- wire_capture aes-256-gcm hidden
ok "wire capture, ChaCha20-Poly1305: verified bit-exact, guest text absent from the wire" -- wire_capture chacha20-poly1305 hidden

# Suites must match: named at both ends, refused before anything is built.
ok "--cipher differs: refused in 'authenticate' naming both, source runs" -- refused "$K1" "$K1" \
  "authenticate: the destination refused to authenticate: auth_hello: the peer asks for --cipher chacha20-poly1305 (suite 3), this side is set to --cipher aes-256-gcm (suite 2).*keeps running" \
  "authenticate: auth_hello: the peer asks for --cipher chacha20-poly1305" --cipher chacha20-poly1305

cipher_usage() {
  expect_fail 2 "--cipher: 'rot13' is not one of aes-256-gcm, chacha20-poly1305, none" fm send 1 127.0.0.1:1 --cipher rot13 || return 1
  expect_fail 2 "--cipher aes-256-gcm needs a key" fm receive --listen 127.0.0.1:0 --cipher aes-256-gcm || return 1
  local c; for c in send receive demo; do
    fm $c --help | grep -q -- "--cipher aes-256-gcm|chacha20-poly1305|none" || { echo "fastmig $c --help lacks --cipher"; return 1; }
  done
}
ok "--cipher: unknown name or no key refused as usage errors; in --help" -- cipher_usage

# Listening off loopback without a key warns.  The address lives on the
# loopback device of a network namespace made for this test (root only).
warn_off_loopback() {
  local ns=fma-auth-$$
  ip netns add "$ns" || return 1
  ip -n "$ns" link set lo up && ip -n "$ns" addr add 10.213.0.1/32 dev lo || { ip netns del "$ns"; return 1; }
  local rc=0
  fm receive --netns "$ns" --listen 10.213.0.1:0 --accept-timeout-ms 200 >/dev/null 2>"$WORK/warn.err" && rc=1
  fm receive --netns "$ns" --listen 10.213.0.1:0 --accept-timeout-ms 200 --psk-file "$K1" >/dev/null 2>"$WORK/warn-key.err"
  fm receive --listen 127.0.0.1:0 --accept-timeout-ms 200 >/dev/null 2>"$WORK/warn-lo.err"
  ip netns del "$ns"
  [ $rc = 0 ] || return 1
  grep -q "warning: listening on 10.213.0.1 without --psk-file" "$WORK/warn.err" || { cat "$WORK/warn.err"; return 1; }
  ! grep -q warning "$WORK/warn-key.err" "$WORK/warn-lo.err" || { cat "$WORK/warn-key.err" "$WORK/warn-lo.err"; return 1; }
}
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
  ok "receive warns when it listens off loopback without a key" -- warn_off_loopback
else
  tap_n=$((tap_n + 1)); echo "ok $tap_n - receive warns off loopback # SKIP needs root and ip"
fi

demo_key() {
  fm demo --memory 64M --warmup-ms 100 --psk-file "$K1" "$@" --json >"$WORK/demo.json" || return 1
  [ "$(json_get "$WORK/demo.json" verified)" = true ]
}
ok "demo with --psk-file (default cipher): verified" -- demo_key
ok "demo with --psk-file --cipher chacha20-poly1305: verified" -- demo_key --cipher chacha20-poly1305

done_testing
