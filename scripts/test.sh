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
  # Not `exec`: the EXIT trap must still stop the cluster.
  cargo test --workspace --no-fail-fast "$@"
  exit
fi

# Two lanes at once, so that neither core waits on the other's kind of test
# (in one process, a thread holding a cluster test idled the other whenever
# both drew one: the suite took 62 min of CI that way, stop 28):
# - the main lane: every test that needs no cluster, two at a time;
# - the cluster lane: every test that needs the cluster: the cluster
#   modules one at a time, then the conformance run.
# The cluster modules stay one at a time: a purge waits for every snapshot
# open on the instance (`blockers`), and some of them hold one on purpose,
# kill or reconfigure members, rename the trail's schema or count
# connections. Tried beside the conformance run (this session): purges
# failed on another lane's held snapshot, and timed model runs did too
# little under the load.
cluster_modules=(audit_cluster:: cluster:: cluster_hosting:: header_cluster:: records_cluster:: server_standby::)
e2e=$(realpath "$(ls -t target/debug/deps/e2e-* | grep -v '\.d$' | head -1)")
lane_log=target/lane-cluster.log
# The e2e binary, one test at a time, with both stores of every fixture
# vault on the cluster; the arguments are its filters.
conformance() {
  (cd tests && PIVAULT_TEST_KEYSTORE=cluster PIVAULT_TEST_RECORDS=cluster "$e2e" --test-threads 1 "$@")
}
cluster_lane() {
  local rc=0
  echo "== cluster lane: ${cluster_modules[*]} (at ${SECONDS} s)"
  (cd tests && "$e2e" --test-threads 1 "${cluster_modules[@]}") || rc=1
  # Conformance (issue 16): the storage tests again, every fixture vault's
  # keystore and records store on the cluster instead of embedded (library
  # fixtures and the CLI's `init` alike).
  # Not repeated: the custodian and library modules (sign-in and access
  # rules more than storage; two of their tests copy a vault directory and
  # open both copies, which on the cluster share one keystore, see
  # ARCHITECTURE), but for the kill at every step of a passphrase change
  # (its slots and signing keys are rows of the keystore cluster there).
  # Two at a time (the main lane is about done by then), but for what needs the
  # cluster alone, run after them: the negative controls and the one
  # concurrency test that hold a snapshot on purpose (a purge waits for
  # every snapshot open on the instance), and the timed model runs (which
  # must get enough done in their time).
  if [ "${PIVAULT_CONFORMANCE:-1}" != 0 ]; then
    echo "== conformance: the storage tests with both stores on the cluster (at ${SECONDS} s)"
    local alone=(
      concurrency::retry_is_audited_under_the_retrier_scoped_for_contractors_and_refuses_complete_batches
      concurrency::concurrent_model_every_acknowledged_write_and_certificate_holds
      server_concurrency::server_concurrent_model_every_acknowledged_write_and_certificate_holds
    )
    local skip_alone=()
    for t in "${alone[@]}"; do skip_alone+=(--skip "$t"); done
    conformance disposal:: backup:: forensic:: crash:: \
      custodian::an_interrupted_passphrase_change_opens_with_exactly_one_passphrase \
      >target/lane-conformance-a.log 2>&1 &
    local a=$!
    conformance concurrency:: "${skip_alone[@]}" >target/lane-conformance-b.log 2>&1 || rc=1
    wait "$a" || rc=1
    cat target/lane-conformance-a.log target/lane-conformance-b.log
    echo "== conformance: what needs the cluster alone (at ${SECONDS} s)"
    conformance purge_controls:: || rc=1
    conformance --exact "${alone[@]}" || rc=1
  fi
  echo "== cluster lane done, rc=$rc (at ${SECONDS} s)"
  return $rc
}
cluster_lane >"$lane_log" 2>&1 &
lane=$!
# A lane left running when this script stops early is stopped with it.
trap 'kill $(jobs -p) 2>/dev/null || true; ./scripts/cluster.sh stop' EXIT

main=0
skips=()
for m in "${cluster_modules[@]}"; do skips+=(--skip "$m"); done
# `--skip m::` matches test names containing `m::`; only the e2e binary
# has modules by these names (checked: `--list` of every other binary).
main_log=target/lane-main.log
cargo test --workspace --no-fail-fast -- "${skips[@]}" 2>&1 | tee "$main_log" || main=$?

lane_rc=0
wait "$lane" || lane_rc=$?
cat "$lane_log"
if [ "$main" != 0 ]; then
  # The main lane's failures again, last: the cluster lane's log above
  # pushes them out of a CI excerpt that keeps only the end (stop 30 showed
  # the failing test's name but not its panic).
  echo "== the main lane's failures, again"
  awk '/^failures:$/ {on = 1} on {print} /^test result:/ {on = 0}' "$main_log"
fi
if [ "$main" != 0 ] || [ "$lane_rc" != 0 ]; then
  echo "TESTS FAILED: main lane rc=$main, cluster lane rc=$lane_rc (at ${SECONDS} s)" >&2
  exit 1
fi
echo "== every test passed (at ${SECONDS} s)"
