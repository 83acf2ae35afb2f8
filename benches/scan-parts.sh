#!/usr/bin/env bash
# A standby's byte scan whole and in parts (pivault_verify.scan_vault's
# `part` of `parts`): what a disposal pays when a standby cancels its scan
# and the vault splits it. Runs against the cluster scripts/cluster.sh
# started (PIVAULT_CLUSTER_DIR, default /tmp/pivault-cluster), as its
# superuser, on the first standby, with BALLAST_MIB of zeros (default 256,
# in 8 MiB files, removed after) put in that standby's data directory so
# that the read dominates as on a member holding much data. ROUNDS rounds
# (default 3); each statement is its own psql (as the vault's sessions are
# new after a cancel), so every figure includes a connection.
set -euo pipefail
dir=${PIVAULT_CLUSTER_DIR:-/tmp/pivault-cluster}
ballast=${BALLAST_MIB:-256}
rounds=${ROUNDS:-3}
pw=$(cat "$dir/superuser.password")
IFS=: read -r -a members <<<"$(grep -o 'PIVAULT_PG_MEMBERS=[^ ]*' "$dir/cluster.env" | cut -d= -f2 | tr -d '"' | tr , :)"
q() { PGPASSWORD=$pw psql -h "$1" -p "$2" -U postgres -d pivault_keys -tAc "$3"; }
standby=""
for ((i = 0; i < ${#members[@]}; i += 2)); do
  if [ "$(q "${members[i]}" "${members[i+1]}" 'SELECT pg_is_in_recovery()')" = t ]; then
    standby="${members[i]} ${members[i+1]}"
    break
  fi
done
[ -n "$standby" ] || { echo "scan-parts: no standby answers" >&2; exit 1; }
read -r host port <<<"$standby"
data=$(q "$host" "$port" 'SHOW data_directory')
trap 'rm -f "$data"/pivault_bench_ballast_*' EXIT
for ((i = 0; i < ballast / 8; i++)); do head -c 8388608 /dev/zero >"$data/pivault_bench_ballast_$i"; done
schema="pv_$(printf '0%.0s' $(seq 1 32))"
echo "standby $host:$port, ${ballast} MiB of ballast, $rounds rounds"
for ((r = 1; r <= rounds; r++)); do
  for parts in 1 4 16 64; do
    s=$(date +%s%N)
    for ((part = 0; part < parts; part++)); do
      q "$host" "$port" "SELECT count(*) FROM pivault_verify.scan_vault(ARRAY['\\x00ff00ff'::bytea], '$schema', NULL, NULL, $part, $parts)" >/dev/null
    done
    e=$(date +%s%N)
    ms=$(((e - s) / 1000000))
    echo "round $r: $parts part(s): $ms ms in all, $((ms / parts)) ms a part"
  done
done
