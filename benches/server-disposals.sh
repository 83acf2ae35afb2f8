#!/usr/bin/env bash
# Disposals arriving together share one batch (DESIGN §4.2): the real
# pivault-server over TLS, N one-record disposal requests sent by CONC
# concurrent clients (curl, a separate process each), once with the
# server's disposal window off (--disposal-window-ms 0: one batch per
# request) and once with it on (default 20 ms). Reports wall time,
# disposals per second and the number of distinct certificates (= batches).
#
# Usage:  benches/server-disposals.sh           (N=200 CONC=16 WINDOWS="0 20")
#         N=1000 CONC=32 BIN_DIR=target/release benches/server-disposals.sh
# Needs:  curl, the binaries built (`cargo build --workspace --all-targets`).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-200}
CONC=${CONC:-16}
WINDOWS=${WINDOWS:-"0 20"}
BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}
[ -x "$BIN_DIR/pivault" ] && [ -x "$BIN_DIR/pivault-server" ] || {
  echo "build first: cargo build --workspace --all-targets (looked in $BIN_DIR)" >&2; exit 2; }
command -v curl >/dev/null || { echo "needs curl" >&2; exit 2; }

. scripts/server-fixture.sh
vault_fixture officer clerk

# Records for every run, imported in one go (synthetic, never real people).
TOTAL=0
for _ in $WINDOWS; do TOTAL=$((TOTAL + N)); done
for i in $(seq 1 "$TOTAL"); do
  printf '{"subject":"B-%d","given_name":"Ada","family_name":"Quimby","ssn":"123-45-6789"}\n' "$i"
done > "$WORK/records.jsonl"
PIVAULT_PASSWORD_FILE="$WORK/clerk.pw" "$P" --user clerk record import customers "$WORK/records.jsonl" >/dev/null
PIVAULT_PASSWORD_FILE="$WORK/officer.pw" "$P" --user officer --json record list --collection customers \
  | grep -o '"record_id":"[^"]*"' | cut -d'"' -f4 > "$WORK/ids"
[ "$(wc -l < "$WORK/ids")" -ge "$TOTAL" ] || { echo "expected $TOTAL records" >&2; exit 1; }

echo "# pivault-server disposals, $(date -u +%FT%TZ), $(nproc) cores, binaries from $BIN_DIR, N=$N one-record requests, $CONC concurrent clients"
OFFSET=0
for W in $WINDOWS; do
  start_server --disposal-window-ms "$W" --requests-per-second 1000000
  TOKEN=$(login officer)
  printf 'Authorization: Bearer %s\n' "$TOKEN" > "$WORK/auth"
  chmod 600 "$WORK/auth"
  sed -n "$((OFFSET + 1)),$((OFFSET + N))p" "$WORK/ids" > "$WORK/batch"
  OFFSET=$((OFFSET + N))
  export URL WORK
  START=$(date +%s.%N)
  xargs -P "$CONC" -I{} sh -c \
    'curl -s --cacert "$WORK/server.crt" -o "$WORK/out.{}" -w "%{http_code}\n" -H @"$WORK/auth" -H "content-type: application/json" \
       -X POST "$URL/v1/disposals" --data "{\"scope\":\"record\",\"record\":\"{}\"}"' \
    < "$WORK/batch" > "$WORK/codes"
  END=$(date +%s.%N)
  OK=$(grep -c '^200$' "$WORK/codes" || true)
  CERTS=$(cat "$WORK"/out.* | grep -o '"certificate_id":"[^"]*"' | sort -u | wc -l)
  rm -f "$WORK"/out.*
  awk -v w="$W" -v n="$N" -v ok="$OK" -v c="$CERTS" -v s="$START" -v e="$END" \
    'BEGIN { printf "window %3s ms: %d/%d disposed in %.2f s = %.1f disposals/s, %d batches (certificates)\n", w, ok, n, e - s, n / (e - s), c }'
  [ "$OK" -eq "$N" ] || { echo "some disposals failed:"; sort "$WORK/codes" | uniq -c; exit 1; }
  stop_server
done
