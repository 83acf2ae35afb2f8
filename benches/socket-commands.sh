#!/usr/bin/env bash
# Staff commands through pivault-server's local socket (issue 10, custody):
# one whole `pivault` process per command, as a clerk's shell or a nightly
# script runs it, against the baseline measured in the same run: the same
# command opening the vault directory directly (an Argon2id unlock per
# command, the real KDF parameters of `init`).
#
# Reports: median and p90 wall time of one `record get` both ways, and
# records per second for a script reading N records, then disposing of N
# records, one command at a time through the socket (disposal direct is
# measured on DIRECT_RUNS records only: at ~1 s a command it is the
# baseline, not a workload anyone would run).
#
# Usage:  benches/socket-commands.sh                (N=1000 RUNS=30 DIRECT_RUNS=3)
#         N=200 BIN_DIR=target/release benches/socket-commands.sh
# Needs:  the binaries built (`cargo build --workspace --all-targets`).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000}
RUNS=${RUNS:-30}
DIRECT_RUNS=${DIRECT_RUNS:-3}
BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}
[ -x "$BIN_DIR/pivault" ] && [ -x "$BIN_DIR/pivault-server" ] || {
  echo "build first: cargo build --workspace --all-targets (looked in $BIN_DIR)" >&2; exit 2; }

. scripts/server-fixture.sh
vault_fixture officer clerk

for i in $(seq 1 "$N"); do
  printf '{"subject":"S-%d","given_name":"Ada","family_name":"Quimby","ssn":"123-45-6789"}\n' "$i"
done > "$WORK/records.jsonl"
PIVAULT_PASSWORD_FILE="$WORK/clerk.pw" "$P" --user clerk record import customers "$WORK/records.jsonl" >/dev/null
PIVAULT_PASSWORD_FILE="$WORK/officer.pw" "$P" --user officer --json record list --collection customers \
  | grep -o '"record_id":"[^"]*"' | cut -d'"' -f4 > "$WORK/ids"
[ "$(wc -l < "$WORK/ids")" -ge "$N" ] || { echo "expected $N records" >&2; exit 1; }
ID=$(head -1 "$WORK/ids")

now() { date +%s%N; }
# stats FILE: median and p90 of the nanosecond durations in FILE, in ms.
stats() { sort -n "$1" | awk '{ a[NR] = $1 } END { m = a[int((NR + 1) / 2)]; p = a[int(NR * 0.9 + 0.999)]; printf "%.1f %.1f", m / 1e6, p / 1e6 }'; }

echo "# pivault commands through the socket vs opening the vault, $(date -u +%FT%TZ), $(nproc) cores, binaries from $BIN_DIR, N=$N"

# Baseline: direct (the custodian's way; before custody, everyone's).
: > "$WORK/direct"
for _ in $(seq 1 "$DIRECT_RUNS"); do
  s=$(now); PIVAULT_PASSWORD_FILE="$WORK/clerk.pw" "$P" --user clerk record get "$ID" >/dev/null; e=$(now)
  echo $((e - s)) >> "$WORK/direct"
done
: > "$WORK/direct-dispose"
for id in $(tail -n "$DIRECT_RUNS" "$WORK/ids"); do
  s=$(now); PIVAULT_PASSWORD_FILE="$WORK/officer.pw" "$P" --user officer dispose record "$id" --yes >/dev/null; e=$(now)
  echo $((e - s)) >> "$WORK/direct-dispose"
done

# Staff: no passphrase, the socket, a login token each.
start_server --logins-per-minute 100000 --requests-per-second 1000000
unset PIVAULT_PASSPHRASE_FILE
export PIVAULT_SOCKET="$WORK/pivault.sock" XDG_CONFIG_HOME="$WORK/config"
PIVAULT_PASSWORD_FILE="$WORK/clerk.pw" "$P" --user clerk login >/dev/null
PIVAULT_PASSWORD_FILE="$WORK/officer.pw" "$P" --user officer login >/dev/null
: > "$WORK/socket"
for _ in $(seq 1 "$RUNS"); do
  s=$(now); "$P" --user clerk record get "$ID" >/dev/null; e=$(now)
  echo $((e - s)) >> "$WORK/socket"
done
read -r DM DP <<< "$(stats "$WORK/direct")"
read -r SM SP <<< "$(stats "$WORK/socket")"
read -r XM _ <<< "$(stats "$WORK/direct-dispose")"
awk -v dm="$DM" -v dp="$DP" -v sm="$SM" -v sp="$SP" -v r="$RUNS" -v d="$DIRECT_RUNS" 'BEGIN {
  printf "record get, direct (baseline): median %7.1f ms, p90 %7.1f ms (%d runs)\n", dm, dp, d
  printf "record get, socket + token:    median %7.1f ms, p90 %7.1f ms (%d runs); direct/socket = x%.0f\n", sm, sp, r, dm / sm }'

# A nightly script: N reads, then N disposals, one command each.
# (The last DIRECT_RUNS records were disposed of by the baseline.)
head -n $((N - DIRECT_RUNS)) "$WORK/ids" > "$WORK/read-ids"
R=$(wc -l < "$WORK/read-ids")
s=$(now)
while read -r id; do "$P" --user clerk record get "$id" >/dev/null; done < "$WORK/read-ids"
e=$(now)
awk -v n="$R" -v ns=$((e - s)) -v dm="$DM" 'BEGIN {
  printf "read %d records one command at a time via socket: %.1f s = %.1f records/s (direct baseline: %.2f records/s)\n", n, ns / 1e9, n / (ns / 1e9), 1000 / dm }'
head -n $((N - DIRECT_RUNS)) "$WORK/ids" > "$WORK/dispose-ids"
M=$(wc -l < "$WORK/dispose-ids")
s=$(now)
while read -r id; do "$P" --user officer dispose record "$id" --yes >/dev/null; done < "$WORK/dispose-ids"
e=$(now)
awk -v n="$M" -v ns=$((e - s)) -v xm="$XM" 'BEGIN {
  printf "dispose of %d records one command at a time via socket: %.1f s = %.1f records/s (direct baseline: median %.0f ms = %.2f records/s)\n", n, ns / 1e9, n / (ns / 1e9), xm, 1000 / xm }'
stop_server
