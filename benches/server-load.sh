#!/usr/bin/env bash
# Load benchmark of pivault-server (issue: the HTTP API over TLS).
#
# A separate load-generating process (wrk) on loopback drives the real
# server over TLS:
#   1. /healthz over TLS: the ceiling of this server on this machine;
#   2. authenticated masked record reads (GET /v1/records/{id}, bearer token),
#      at 16 and 64 concurrent connections: requests/s, p50, p99;
#   3. masked reads alone (16 connections), then while a second wrk floods
#      the server without a token (401s) and then with wrong-password logins
#      (the per-address login limit raised so that every attempt reaches
#      Argon2id: the worst case for starvation), reported as ratios of
#      reads/s and p99 against the alone baseline of the same run.
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

# Issue 13: masked reads alone, then under an unauthenticated flood (GET
# without a token: 401s, counted per source and minute in the audit trail)
# and under a wrong-password login flood, from a second wrk process; each
# reported as a ratio against the alone baseline of this same run.
cat > "$WORK/flood.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"username":"nobody-at-all","password":"not-the-password-123"}'
LUA
rps_of() { awk '/Requests\/sec/ {print $2}' "$1"; }
# p99 in milliseconds (wrk prints us, ms or s).
p99_ms() { awk '$1=="99%" { v=$2; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } print v }' "$1"; }
reads() { wrk -t1 -c16 -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" "$URL_IP/v1/records/$ID" > "$1"; }
ratio() { # label, file, baseline file
  awk -v r="$(rps_of "$2")" -v b="$(rps_of "$3")" -v p="$(p99_ms "$2")" -v q="$(p99_ms "$3")" -v l="$1" \
    'BEGIN { printf "  %-42s reads/s %.2f x alone, p99 %.2f x alone\n", l, r / b, p / q }'
}
reads "$WORK/alone.txt"
summary "reads alone, 16 conn" "$WORK/alone.txt"
for FLOOD_KIND in unauthenticated wrong-password; do
  if [ "$FLOOD_KIND" = unauthenticated ]; then
    wrk -t1 -c64 -d"$DURATION" "$URL_IP/v1/records/$ID" > "$WORK/flood-$FLOOD_KIND.txt" &
  else
    wrk -t1 -c16 -d"$DURATION" -s "$WORK/flood.lua" "$URL_IP/v1/sessions" > "$WORK/flood-$FLOOD_KIND.txt" &
  fi
  FLOOD=$!
  sleep 1
  reads "$WORK/under-$FLOOD_KIND.txt"
  wait "$FLOOD" || true
  summary "reads during a $FLOOD_KIND flood, 16 conn" "$WORK/under-$FLOOD_KIND.txt"
  summary "  the flood itself" "$WORK/flood-$FLOOD_KIND.txt"
  ratio "under the $FLOOD_KIND flood:" "$WORK/under-$FLOOD_KIND.txt" "$WORK/alone.txt"
done
stop_server
AUDIT_BYTES=$(du -sb "$PIVAULT_DIR/audit" 2>/dev/null | awk '{print $1}')
echo "audit trail after the run: ${AUDIT_BYTES:-?} bytes (every authenticated read and login attempt is one event; requests refused before authentication one per source and minute)"
