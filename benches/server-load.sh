#!/usr/bin/env bash
# Load benchmark of pivault-server (issue: the HTTP API over TLS).
#
# A separate load-generating process (wrk) on loopback drives the real
# server over TLS:
#   1. /healthz over TLS: the ceiling of this server on this machine;
#   2. authenticated masked record reads (GET /v1/records/{id}, bearer token),
#      at 16 and 64 concurrent connections: requests/s, p50, p99;
#   3. the same reads while a second wrk floods POST /v1/sessions with wrong
#      passwords (with the per-address login limit raised so that every
#      attempt reaches Argon2id: the worst case for starvation).
#
# Usage:  benches/server-load.sh            (DURATION=10s by default)
#         DURATION=30s BIN_DIR=target/release benches/server-load.sh
# Needs:  wrk and curl (installed with apt-get when missing), the binaries
#         built (`cargo build --workspace --all-targets`).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}
THREADS=${THREADS:-2}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need curl; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk curl
fi
[ -x "$BIN_DIR/pivault" ] && [ -x "$BIN_DIR/pivault-server" ] || {
  echo "build first: cargo build --workspace --all-targets (looked in $BIN_DIR)" >&2; exit 2; }

. scripts/server-fixture.sh
vault_fixture officer clerk
printf '{"given_name":"Ada","family_name":"Quimby","ssn":"123-45-6789","card":"4111111111111111"}' > "$WORK/rec.json"
ID=$(PIVAULT_PASSWORD_FILE="$WORK/clerk.pw" "$P" --user clerk --json record put customers --data "$WORK/rec.json" \
  | sed -E 's/.*"record_id":"([^"]+)".*/\1/')

start_server --logins-per-minute 1000000 --requests-per-second 10000000
TOKEN=$(login clerk)
[ "${#TOKEN}" -gt 10 ] || { echo "login failed" >&2; exit 1; }

echo "# pivault-server load, $(date -u +%FT%TZ), $(nproc) cores, binaries from $BIN_DIR, wrk -t$THREADS -d$DURATION"
summary() { # label, wrk output file
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$2")
  p50=$(awk '$1=="50%" {print $2}' "$2")
  p99=$(awk '$1=="99%" {print $2}' "$2")
  printf '%-44s %10s req/s   p50 %8s   p99 %8s\n' "$1" "$rps" "$p50" "$p99"
}
for C in 16 64; do
  wrk -t"$THREADS" -c"$C" -d"$DURATION" --latency "$URL_IP/healthz" > "$WORK/h$C.txt"
  summary "GET /healthz (TLS), $C connections" "$WORK/h$C.txt"
  wrk -t"$THREADS" -c"$C" -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" \
    "$URL_IP/v1/records/$ID" > "$WORK/r$C.txt"
  grep -q "Non-2xx" "$WORK/r$C.txt" && { echo "non-2xx answers:"; grep "Non-2xx" "$WORK/r$C.txt"; }
  summary "GET /v1/records/{id} masked, $C connections" "$WORK/r$C.txt"
  awk -v a="$(awk '/Requests\/sec/ {print $2}' "$WORK/r$C.txt")" \
      -v b="$(awk '/Requests\/sec/ {print $2}' "$WORK/h$C.txt")" \
      'BEGIN { printf "  ratio reads / healthz at %s connections: %.2f\n", "'"$C"'", a / b }'
done

# Login flood from a second process while reads are measured.
cat > "$WORK/flood.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"username":"nobody-at-all","password":"not-the-password-123"}'
LUA
wrk -t1 -c16 -d"$DURATION" -s "$WORK/flood.lua" "$URL_IP/v1/sessions" > "$WORK/flood.txt" &
FLOOD=$!
sleep 1
wrk -t1 -c16 -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" "$URL_IP/v1/records/$ID" > "$WORK/rf.txt"
wait "$FLOOD" || true
summary "reads during a wrong-password flood, 16 conn" "$WORK/rf.txt"
summary "  the flood itself (POST /v1/sessions)" "$WORK/flood.txt"
stop_server
