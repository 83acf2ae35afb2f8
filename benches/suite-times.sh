#!/usr/bin/env bash
# Where the test suite's time goes (benches/README.md "The test suite's
# time"): scripts/test.sh's layout before its two cluster lanes (the main
# lane beside one cluster lane on one cluster), every test binary run
# directly with libtest's per-test times (`--report-time`, an unstable
# option: RUSTC_BOOTSTRAP=1 for the test binaries only, never for cargo,
# whose build scripts would rebuild RocksDB on it). Logs: target/times-*.log.
# Needs the build CI makes (clippy as the workspace's wrapper).
set -uo pipefail
cd "$(dirname "$0")/.."
s=$(date +%s)
./scripts/cluster.sh start >/dev/null
# shellcheck disable=SC1090
source "$(./scripts/cluster.sh env)"
export RUSTC_BOOTSTRAP=1
RT=(-Z unstable-options --report-time)
cluster_modules=(audit_cluster:: cluster:: cluster_hosting:: header_cluster:: records_cluster:: server_standby::)
e2e=$(realpath "$(ls -t target/debug/deps/e2e-* | grep -v '\.d$' | head -1)")
conformance() { (cd tests && PIVAULT_TEST_KEYSTORE=cluster PIVAULT_TEST_RECORDS=cluster "$e2e" "${RT[@]}" --test-threads 1 "$@"); }
cluster_lane() {
  echo "== cluster lane at $(( $(date +%s) - s ))"
  (cd tests && "$e2e" "${RT[@]}" --test-threads 1 "${cluster_modules[@]}")
  echo "== conformance at $(( $(date +%s) - s ))"
  local alone=(
    concurrency::retry_is_audited_under_the_retrier_scoped_for_contractors_and_refuses_complete_batches
    concurrency::concurrent_model_every_acknowledged_write_and_certificate_holds
    server_concurrency::server_concurrent_model_every_acknowledged_write_and_certificate_holds
  )
  local skip_alone=(); for t in "${alone[@]}"; do skip_alone+=(--skip "$t"); done
  conformance disposal:: backup:: forensic:: crash:: custodian::an_interrupted_passphrase_change_opens_with_exactly_one_passphrase >target/times-conformance-a.log 2>&1 &
  local a=$!
  conformance concurrency:: "${skip_alone[@]}" >target/times-conformance-b.log 2>&1
  wait $a
  cat target/times-conformance-a.log target/times-conformance-b.log
  echo "== alone at $(( $(date +%s) - s ))"
  conformance purge_controls::
  conformance --exact "${alone[@]}"
  echo "== cluster lane done at $(( $(date +%s) - s ))"
}
cluster_lane > target/times-cluster.log 2>&1 &
lane=$!
skips=(); for m in "${cluster_modules[@]}"; do skips+=(--skip "$m"); done
{
echo "== main lane at $(( $(date +%s) - s ))"
for exe in $(env -u RUSTC_BOOTSTRAP RUSTC_WORKSPACE_WRAPPER=clippy-driver CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" cargo build --workspace --all-targets --message-format=json 2>/dev/null | python3 -c '
import json,sys
for l in sys.stdin:
    try: m=json.loads(l)
    except: continue
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m.get("profile",{}).get("test") and "bench" not in m["target"]["kind"]:
        print(m["manifest_path"].rsplit("/",1)[0]+"|"+m["executable"])'); do
  dir=${exe%%|*}; bin=${exe##*|}
  echo "== $bin at $(( $(date +%s) - s ))"
  (cd "$dir" && "$bin" "${RT[@]}" "${skips[@]}")
done
echo "== main lane done at $(( $(date +%s) - s ))"
} > target/times-main.log 2>&1
wait $lane
./scripts/cluster.sh stop
echo "ALL DONE $(( $(date +%s) - s ))" >> target/times-main.log
