#!/usr/bin/env bash
# Many vaults in one pivault-server process (`--hosting`, issue 16):
# what a vault costs in memory, and what sharing the process costs a
# vault's reads, against one server per vault measured in the same run.
#
#   1. one vault served alone (`--vault`): masked reads (GET /v1/records/{id})
#      at 16 connections, and the process's resident memory;
#   2. the same vault among VAULTS vaults in one `--hosting` process: its reads
#      alone, and the process's resident memory (per extra vault);
#   3. four of the hosted vaults read at once (4 connections each), summed;
#   4. fairness: a quiet vault's reads (4 connections) while another hosted
#      vault is flooded (64 connections), against the quiet vault alone:
#      its requests/s and p99 as ratios.
#
# Usage:  benches/server-hosting.sh            (VAULTS=20, DURATION=10s)
#         VAULTS=100 DURATION=20s BIN_DIR=target/release benches/server-hosting.sh
#         FLOOD=list benches/server-hosting.sh  (the flood lists the flooded
#         vault's 300 records, 100 a page: more server work per request)
# Needs:  wrk and curl (installed with apt-get when missing), the binaries
#         built (`cargo build --workspace --all-targets`).
set -euo pipefail
cd "$(dirname "$0")/.."

VAULTS=${VAULTS:-20}
FLOOD=${FLOOD:-read}
DURATION=${DURATION:-10s}
BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}
[ "$VAULTS" -ge 5 ] || { echo "VAULTS must be at least 5" >&2; exit 2; }


# WORK, and the server in SERVER_PID stopped at exit.
. scripts/server-fixture.sh
needs_wrk
P="$BIN_DIR/pivault"
printf 'Bench-first-Granite-Otter-64' > "$WORK/admin.pw"
printf 'Bench-second-Granite-Otter-64' > "$WORK/clerk.pw"
printf 'Bench-third-Granite-Otter-64' > "$WORK/officer.pw"
printf '{"given_name":"Ada","family_name":"Quimby","ssn":"123-45-6789","card":"4111111111111111"}' > "$WORK/rec.json"
chmod 600 "$WORK"/*

# VAULTS vaults, each with its own passphrase, an officer, a clerk and one record.
echo "# creating $VAULTS vaults" >&2
for i in $(seq 1 "$VAULTS"); do
  printf 'bench-vault-%s-passphrase-9Tq!' "$i" > "$WORK/v$i.pass"; chmod 600 "$WORK/v$i.pass"
  export PIVAULT_PASSPHRASE_FILE="$WORK/v$i.pass" PIVAULT_DIR="$WORK/v$i"
  PIVAULT_PASSWORD_FILE="$WORK/admin.pw" "$P" init --admin admin --two-factor none >/dev/null
  for u in officer clerk; do
    PIVAULT_PASSWORD_FILE="$WORK/admin.pw" PIVAULT_NEW_PASSWORD_FILE="$WORK/$u.pw" \
      "$P" --user admin user add "$u" --role "$u" >/dev/null
  done
  PIVAULT_PASSWORD_FILE="$WORK/admin.pw" \
    "$P" --user admin collection create customers --schema examples/customers.schema.json >/dev/null
  PIVAULT_PASSWORD_FILE="$WORK/clerk.pw" "$P" --user clerk --json record put customers --data "$WORK/rec.json" \
    | sed -E 's/.*"record_id":"([^"]+)".*/\1/' > "$WORK/v$i.record"
done
if [ "$FLOOD" = list ]; then
  for n in $(seq 1 300); do
    printf '{"subject":"C-%s","given_name":"Ada","family_name":"Quimby","ssn":"123-45-6789"}\n' "$n"
  done > "$WORK/many.jsonl"
  PIVAULT_PASSPHRASE_FILE="$WORK/v3.pass" PIVAULT_DIR="$WORK/v3" PIVAULT_PASSWORD_FILE="$WORK/clerk.pw" \
    "$P" --user clerk record import customers "$WORK/many.jsonl" >/dev/null
fi
unset PIVAULT_PASSPHRASE_FILE PIVAULT_DIR
LIFTED=(--logins-per-minute 1000000 --requests-per-second 10000000 --refusals-per-minute 0 --no-access-log)

# The port a server printed for the vault in DIR (or for its only vault).
port_of() { # log, dir or ""
  local line
  for _ in $(seq 1 600); do
    if [ -n "$2" ]; then line=$(grep -F "($2) listening on https://" "$1" || true)
    else line=$(grep -F "listening on https://" "$1" || true); fi
    [ -n "$line" ] && { sed -nE 's/.*listening on https:\/\/127\.0\.0\.1:([0-9]+).*/\1/p' <<<"$line"; return; }
    sleep 0.1
  done
  cat "$1" >&2; exit 1
}
token() { # port
  curl -s --cacert "$WORK/server.crt" -X POST "https://localhost:$1/v1/sessions" -H 'content-type: application/json' \
    --data-binary @<(printf '{"username":"clerk","password":"%s"}' "$(cat "$WORK/clerk.pw")") \
    | sed -E 's/.*"token":"([^"]+)".*/\1/'
}
reads() { # port, vault number, connections, output[, path]
  wrk -t1 -c"$3" -d"$DURATION" --latency -H "Authorization: Bearer $(token "$1")" \
    "https://127.0.0.1:$1${5:-/v1/records/$(cat "$WORK/v$2.record")}" > "$4"
}
if [ "$FLOOD" = list ]; then FLOOD_PATH="/v1/records?collection=customers"; else FLOOD_PATH=""; fi
rps_of() { awk '/Requests\/sec/ {print $2}' "$1"; }
p99_ms() { awk '$1=="99%" { v=$2; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } print v }' "$1"; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a/b }'; }

echo "# pivault-server --hosting, $(date -u +%FT%TZ), $(nproc) cores, $VAULTS vaults, flood: $FLOOD, binaries from $BIN_DIR, wrk -d$DURATION"

# 1. One vault, its own server.
PIVAULT_PASSPHRASE_FILE="$WORK/v1.pass" "$BIN_DIR/pivault-server" --vault "$WORK/v1" --bind 127.0.0.1:0 \
  --self-signed --tls-cert "$WORK/server.crt" --tls-key "$WORK/server.key" --no-socket "${LIFTED[@]}" \
  2> "$WORK/single.log" &
SERVER_PID=$!
PORT=$(port_of "$WORK/single.log" "")
reads "$PORT" 1 16 "$WORK/single.txt"
RSS_SINGLE=$(rss_mib "$SERVER_PID")
kill "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=""

# 2. The same vault among VAULTS in one process.
{
  printf '{ "vaults": ['
  for i in $(seq 1 "$VAULTS"); do
    [ "$i" -gt 1 ] && printf ','
    printf '\n  { "dir": "v%s", "passphrase_file": "v%s.pass", "bind": "127.0.0.1:0" }' "$i" "$i"
  done
  printf '\n] }\n'
} > "$WORK/hosting.json"
START=$(date +%s.%N)
"$BIN_DIR/pivault-server" --hosting "$WORK/hosting.json" \
  --self-signed --tls-cert "$WORK/server.crt" --tls-key "$WORK/server.key" "${LIFTED[@]}" \
  2> "$WORK/hosting.log" &
SERVER_PID=$!
for i in $(seq 1 "$VAULTS"); do PORTS[i]=$(port_of "$WORK/hosting.log" "$WORK/v$i"); done
STARTED=$(awk -v a="$START" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b-a }')
grep -q "serving $VAULTS of $VAULTS vault(s)" "$WORK/hosting.log" || { cat "$WORK/hosting.log" >&2; exit 1; }
reads "${PORTS[1]}" 1 16 "$WORK/hosted.txt"
RSS_HOSTED=$(rss_mib "$SERVER_PID")

# 3. Four hosted vaults at once.
READERS=()
for i in 2 3 4 5; do reads "${PORTS[i]}" "$i" 4 "$WORK/four-$i.txt" & READERS+=($!); done
wait "${READERS[@]}"
FOUR=$(for i in 2 3 4 5; do rps_of "$WORK/four-$i.txt"; done | awk '{s+=$1} END {printf "%.0f", s}')

# 4. A quiet vault alone, then beside a flooded one.
reads "${PORTS[2]}" 2 4 "$WORK/quiet-alone.txt"
reads "${PORTS[3]}" 3 64 "$WORK/flood.txt" "$FLOOD_PATH" &
FLOODING=$!
sleep 1
reads "${PORTS[2]}" 2 4 "$WORK/quiet-beside.txt"
wait "$FLOODING"
kill "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=""
grep -q "pivault-server: stopped" "$WORK/hosting.log" || { echo "the hosting server did not stop cleanly" >&2; cat "$WORK/hosting.log" >&2; exit 1; }

S=$(rps_of "$WORK/single.txt"); H=$(rps_of "$WORK/hosted.txt")
QA=$(rps_of "$WORK/quiet-alone.txt"); QB=$(rps_of "$WORK/quiet-beside.txt")
printf '%-58s %10s req/s  p99 %7s ms\n' "1. one vault, its own server (16 conn)" "$S" "$(p99_ms "$WORK/single.txt")"
printf '%-58s %10s req/s  p99 %7s ms  (%s x)\n' "2. the same vault among $VAULTS in one process (16 conn)" "$H" "$(p99_ms "$WORK/hosted.txt")" "$(ratio "$H" "$S")"
printf '%-58s %10s req/s              (%s x)\n' "3. four hosted vaults at once (4 x 4 conn), summed" "$FOUR" "$(ratio "$FOUR" "$S")"
printf '%-58s %10s req/s  p99 %7s ms\n' "4a. a quiet hosted vault alone (4 conn)" "$QA" "$(p99_ms "$WORK/quiet-alone.txt")"
printf '%-58s %10s req/s  p99 %7s ms  (%s x, p99 %s x)\n' "4b. the same beside a flooded vault (64 conn)" "$QB" "$(p99_ms "$WORK/quiet-beside.txt")" \
  "$(ratio "$QB" "$QA")" "$(ratio "$(p99_ms "$WORK/quiet-beside.txt")" "$(p99_ms "$WORK/quiet-alone.txt")")"
printf '%-58s %10s req/s\n' "    the flooded vault meanwhile" "$(rps_of "$WORK/flood.txt")"
printf 'resident memory: one vault alone %s MiB; %s vaults in one process %s MiB (%s MiB per further vault); started in %s s\n' \
  "$RSS_SINGLE" "$VAULTS" "$RSS_HOSTED" "$(awk -v h="$RSS_HOSTED" -v s="$RSS_SINGLE" -v n="$VAULTS" 'BEGIN { printf "%.1f", (h-s)/(n-1) }')" "$STARTED"
