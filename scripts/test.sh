#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, then every test of the
# workspace (unit, property, end-to-end CLI, forensic and crash tests).
# Knobs: PIVAULT_CRASH_ITERATIONS (default 12) for the kill-and-reopen loop;
# PIVAULT_CLUSTER_DIR / PIVAULT_CLUSTER_PORT for scripts/cluster.sh;
# PIVAULT_CONFORMANCE=0 skips the storage tests' second run on the cluster.
# Arguments, if any, go to `cargo test` as they are (one run, no split).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# One selection everywhere (--workspace --all-targets): any other selection resolves
# different build-dependency features and recompiles RocksDB from scratch.
cargo build --workspace --all-targets
# The cluster tests run against 3 PostgreSQL members under Patroni on
# loopback, started here and stopped on exit (about 10 s and 0.3 GB).
./scripts/cluster.sh start >/dev/null
trap './scripts/cluster.sh stop' EXIT
# shellcheck disable=SC1090
source "$(./scripts/cluster.sh env)"
if [ $# -gt 0 ]; then
  exec cargo test --workspace --no-fail-fast "$@"
fi

# Lanes at once, so that neither core waits on the other's kind of test (in
# one process, a thread holding a cluster test idled the other whenever both
# drew one: the suite took 62 min of CI that way, stop 28):
# - the main lane: every test that needs no cluster, two at a time;
# - three cluster lanes, one test at a time each: the cluster modules'
#   tests, and the conformance run in two halves (the storage tests again,
#   every fixture vault's keystore and records store on the cluster instead
#   of embedded; library fixtures and the CLI's `init` alike). Vaults on
#   one cluster are the product's case: each test has its own.
# - then, alone on the cluster, the tests that need it to themselves: held
#   snapshots and skipped purge steps (negative controls that would block,
#   or be cleaned up by, another test's purge), members killed, stopped or
#   reconfigured, and the fixtures' role's connections counted.
# Not repeated on the cluster: the custodian and library modules (sign-in
# and access rules more than storage; two of their tests copy a vault
# directory and open both copies, which on the cluster share one keystore,
# see ARCHITECTURE), but for the kill at every step of a passphrase change
# (its slots and signing keys are rows of the keystore cluster there).
cluster_modules=(audit_cluster:: cluster:: cluster_hosting:: header_cluster:: records_cluster:: server_standby::)
alone=(
  cluster::a_held_repeatable_read_snapshot_on_the_primary_blocks_the_certificate
  cluster::a_standby_that_is_down_makes_the_batch_wait_and_it_completes_once_the_member_is_back
  cluster::doctor_fails_a_member_whose_settings_would_keep_destroyed_keys
  cluster::many_vaults_in_one_process_share_a_budget_of_connections_and_lose_nothing
  cluster::plain_vacuum_instead_of_vacuum_full_blocks_the_certificate
  cluster::skipping_the_wal_rounds_blocks_the_certificate
  cluster::the_primary_killed_in_the_middle_of_a_disposal_fails_over_and_the_batch_completes_on_the_new_one
  records_cluster::a_disposal_purges_the_blind_indexes_from_every_member_and_a_plain_vacuum_is_caught
  records_cluster::the_primary_killed_mid_disposal_with_records_on_the_cluster_loses_no_acknowledged_write
)
conformance_alone=(purge_controls:: forensic::)
e2e=$(realpath "$(ls -t target/debug/deps/e2e-* | grep -v '\.d$' | head -1)")
skip_alone=()
for t in "${alone[@]}"; do skip_alone+=(--skip "$t"); done
# One test at a time in tests/ (where `cargo test` runs them), output to
# target/lane-$1.log; the rest of the arguments go to the e2e binary.
lane() {
  local name=$1
  shift
  (cd tests && "$e2e" --test-threads 1 "$@") >"target/lane-$name.log" 2>&1
}
conformance() {
  local name=$1
  shift
  PIVAULT_TEST_KEYSTORE=cluster PIVAULT_TEST_RECORDS=cluster lane "$name" "$@"
}
# A lane's end: its log printed, its failure kept.
failed=()
finish() {
  local name=$1 pid=$2
  if wait "$pid"; then echo "== lane $name passed (at ${SECONDS} s)"; else failed+=("$name"); fi
  cat "target/lane-$name.log"
}
conformance_on=${PIVAULT_CONFORMANCE:-1}

echo "== lanes start (at ${SECONDS} s)"
lane cluster "${cluster_modules[@]}" "${skip_alone[@]}" &
cluster_pid=$!
if [ "$conformance_on" != 0 ]; then
  conformance conformance-1 concurrency:: &
  conformance_1=$!
  conformance conformance-2 disposal:: backup:: crash:: \
    custodian::an_interrupted_passphrase_change_opens_with_exactly_one_passphrase &
  conformance_2=$!
fi
skips=()
for m in "${cluster_modules[@]}"; do skips+=(--skip "$m"); done
# `--skip m::` matches test names containing `m::`; only the e2e binary
# has modules by these names (checked: `--list` of every other binary).
cargo test --workspace --no-fail-fast -- "${skips[@]}" || failed+=(main)
finish cluster "$cluster_pid"
if [ "$conformance_on" != 0 ]; then
  finish conformance-1 "$conformance_1"
  finish conformance-2 "$conformance_2"
fi
echo "== the cluster to themselves (at ${SECONDS} s)"
lane alone --exact "${alone[@]}" && echo "== lane alone passed" || failed+=(alone)
cat target/lane-alone.log
if [ "$conformance_on" != 0 ]; then
  conformance conformance-alone "${conformance_alone[@]}" && echo "== lane conformance-alone passed" \
    || failed+=(conformance-alone)
  cat target/lane-conformance-alone.log
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "TESTS FAILED in: ${failed[*]} (at ${SECONDS} s)" >&2
  exit 1
fi
echo "== every test passed (at ${SECONDS} s)"
