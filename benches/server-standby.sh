#!/usr/bin/env bash
# What a standby's forwarding costs (issue 16, high availability): a vault
# with its keystore and records on the cluster of scripts/cluster.sh, the
# real pivault-server holding it and a second one standing by (--standby,
# the same certificate), which forwards every request to the holder. wrk
# drives the same masked record read (GET /v1/records/{id}) and /healthz
# against the holder and through the standby, in this same run; reported
# as requests/s, p50, p99 and the ratio standby / holder.
#
# Usage:  benches/server-standby.sh            (DURATION=10s, CONNECTIONS=16)
# Needs:  wrk and curl (installed when missing), the binaries built
#         (`cargo build --workspace --all-targets`); starts the cluster when
#         PIVAULT_PG_MEMBERS is not set (and leaves it running).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}

if [ -z "${PIVAULT_PG_MEMBERS:-}" ]; then
  ./scripts/cluster.sh start >/dev/null
  # shellcheck disable=SC1090
  source "$(./scripts/cluster.sh env)"
fi

. scripts/server-fixture.sh
needs_wrk
STANDBY_PID=""
trap '[ -n "$STANDBY_PID" ] && kill "$STANDBY_PID" 2>/dev/null; fixture_cleanup' EXIT
members=$(printf '"%s",' ${PIVAULT_PG_MEMBERS//,/ }); members="[${members%,}]"
printf '{ "engine": "postgresql", "members": %s, "database": "pivault_keys", "user": "pivault", "password_file": "%s", "ca_file": "%s" }\n' \
  "$members" "$PIVAULT_PG_PASSWORD_FILE" "$PIVAULT_PG_CA_FILE" > "$WORK/keystore.json"
sed 's/"pivault_keys"/"pivault_records"/' "$WORK/keystore.json" > "$WORK/records.json"
INIT_FLAGS="--keystore-cluster $WORK/keystore.json --records-cluster $WORK/records.json" vault_fixture officer clerk
printf '{"given_name":"Ada","family_name":"Quimby","ssn":"123-45-6789"}' > "$WORK/rec.json"
ID=$(PIVAULT_PASSWORD_FILE="$WORK/clerk.pw" "$P" --user clerk --json record put customers --data "$WORK/rec.json" \
  | sed -E 's/.*"record_id":"([^"]+)".*/\1/')
cp -a "$WORK/vault" "$WORK/vault-b"

start_server --requests-per-second 10000000 --refusals-per-minute 0
HOLDER=$URL_IP
"$BIN_DIR/pivault-server" --vault "$WORK/vault-b" --standby --bind 127.0.0.1:0 \
  --tls-cert "$WORK/server.crt" --tls-key "$WORK/server.key" --no-socket \
  --requests-per-second 10000000 --refusals-per-minute 0 2> "$WORK/standby.log" &
STANDBY_PID=$!
STANDBY=""
for _ in $(seq 1 600); do
  STANDBY=$(sed -nE 's/.*standing by on (https:\/\/127\.0\.0\.1:[0-9]+).*/\1/p' "$WORK/standby.log")
  [ -n "$STANDBY" ] && break; sleep 0.1
done
[ -n "$STANDBY" ] || { cat "$WORK/standby.log" >&2; exit 1; }
TOKEN=$(login clerk)
[ "${#TOKEN}" -gt 10 ] || { echo "login failed" >&2; exit 1; }

echo "# pivault-server through a standby, $(date -u +%FT%TZ), $(nproc) cores, binaries from $BIN_DIR, wrk -t2 -c$CONNECTIONS -d$DURATION"
rps_of() { awk '/Requests\/sec/ {print $2}' "$1"; }
summary() { # label, wrk output file
  printf '%-46s %10s req/s   p50 %8s   p99 %8s\n' "$1" "$(rps_of "$2")" \
    "$(awk '$1=="50%" {print $2}' "$2")" "$(awk '$1=="99%" {print $2}' "$2")"
  if grep -q "Non-2xx" "$2"; then grep "Non-2xx" "$2"; fi
}
for what in healthz read; do
  for side in holder standby; do
    base=$HOLDER; [ "$side" = standby ] && base=$STANDBY
    if [ "$what" = healthz ]; then
      wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$base/healthz" > "$WORK/$what-$side.txt"
      summary "GET /healthz, $side" "$WORK/$what-$side.txt"
    else
      wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" \
        "$base/v1/records/$ID" > "$WORK/$what-$side.txt"
      summary "GET /v1/records/{id} masked, $side" "$WORK/$what-$side.txt"
    fi
  done
  awk -v s="$(rps_of "$WORK/$what-standby.txt")" -v h="$(rps_of "$WORK/$what-holder.txt")" -v w="$what" \
    'BEGIN { printf "  %s through the standby: %.2f x the holder directly\n", w, s / h }'
done
