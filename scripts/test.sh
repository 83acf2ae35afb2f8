#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, then every test of the
# workspace (unit, property, end-to-end CLI, forensic and crash tests).
# Knobs: PIVAULT_CRASH_ITERATIONS (default 12) for the kill-and-reopen loop;
# PIVAULT_CLUSTER_DIR / PIVAULT_CLUSTER_PORT for scripts/cluster.sh (the
# first cluster; the second is that directory with `-b`, its ports 1000
# above); PIVAULT_CLUSTER_LANES=1 for one cluster and one cluster lane;
# PIVAULT_CONFORMANCE=0 skips the storage tests' second run on the cluster.
# Arguments, if any, go to `cargo test` as they are (one run, no split).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# One selection everywhere (--workspace --all-targets): any other selection resolves
# different build-dependency features and recompiles RocksDB from scratch.
cargo build --workspace --all-targets
# The cluster tests run against 3 PostgreSQL members under Patroni on
# loopback (about 10 s and 0.3 GB each): two such clusters by default, each
# serving one lane of cluster tests (PIVAULT_CLUSTER_LANES=1: one cluster,
# one lane, as before). The second cluster is the first's directory with
# `-b` and its ports 1000 above (PIVAULT_CLUSTER_DIR / PIVAULT_CLUSTER_PORT).
lanes=${PIVAULT_CLUSTER_LANES:-2}
case $lanes in 1|2) ;; *) echo "PIVAULT_CLUSTER_LANES must be 1 or 2" >&2; exit 2 ;; esac
# Arguments: one plain `cargo test` on one cluster.
[ $# -eq 0 ] || lanes=1
dir_a=${PIVAULT_CLUSTER_DIR:-/tmp/pivault-cluster}
dir_a=${dir_a%/}
port_a=${PIVAULT_CLUSTER_PORT:-55400}
dir_b=$dir_a-b
port_b=$((port_a + 1000))
# A command with cluster `dir` `port`'s environment: its members for the
# tests, and its directory and ports for the cluster.sh they run (a member
# stopped or started).
on_cluster() {
  local dir=$1 port=$2
  shift 2
  (
    export PIVAULT_CLUSTER_DIR=$dir PIVAULT_CLUSTER_PORT=$port
    # shellcheck disable=SC1090
    source "$(./scripts/cluster.sh env)"
    "$@"
  )
}
# Both, whatever the first's stop says.
stop_clusters() {
  PIVAULT_CLUSTER_DIR=$dir_a PIVAULT_CLUSTER_PORT=$port_a ./scripts/cluster.sh stop || true
  if [ "$lanes" = 2 ]; then
    PIVAULT_CLUSTER_DIR=$dir_b PIVAULT_CLUSTER_PORT=$port_b ./scripts/cluster.sh stop || true
  fi
}
trap stop_clusters EXIT
PIVAULT_CLUSTER_DIR=$dir_a PIVAULT_CLUSTER_PORT=$port_a ./scripts/cluster.sh start >/dev/null
if [ "$lanes" = 2 ]; then
  PIVAULT_CLUSTER_DIR=$dir_b PIVAULT_CLUSTER_PORT=$port_b ./scripts/cluster.sh start >/dev/null
fi
if [ $# -gt 0 ]; then
  # Not `exec`: the EXIT trap must still stop the clusters.
  on_cluster "$dir_a" "$port_a" cargo test --workspace --no-fail-fast "$@"
  exit
fi

# The main lane (every test that needs no cluster, two at a time) runs
# beside the cluster lanes, so that neither core waits on the other's kind
# of test (in one process, a thread holding a cluster test idled the other
# whenever both drew one: the suite took 62 min of CI that way, stop 28).
# Each cluster lane runs its tests one at a time on its own cluster: a
# purge waits for every snapshot open on the instance (`blockers`), and
# some tests hold one on purpose, kill or reconfigure members, rename the
# trail's schema or count connections. Two lanes on two clusters took the
# tests from about 1,780 s to 1,094 s here (one lane took 1,780 s of a
# 1,787 s suite, the main lane 448 s; benches/README.md "The test suite's
# time").
#
# The modules that need the cluster (`--skip m::` and the filters match
# test names containing `m::`: `cluster::` also names delete_cluster:: and
# delete_resume_cluster::, which the main lane must skip too).
cluster_modules=(audit_cluster:: cluster:: cluster_hosting:: header_cluster:: records_cluster:: server_standby::)
e2e=$(realpath "$(ls -t target/debug/deps/e2e-* | grep -v '\.d$' | head -1)")
# The e2e tests whose names begin with one of the modules given.
tests_of() {
  local re
  re=$(printf '%s|' "$@")
  (cd tests && "$e2e" --list 2>/dev/null) | sed -n 's/: test$//p' | grep -E "^(${re%|})" || true
}
# The e2e binary, one test at a time, on the current cluster; the
# arguments are its filters.
cluster_tests() {
  (cd tests && "$e2e" --test-threads 1 "$@")
}
# Conformance (issue 16): the storage tests again, every fixture vault's
# keystore and records store on the cluster instead of embedded (library
# fixtures and the CLI's `init` alike). Not repeated: the custodian and
# library modules (sign-in and access rules more than storage; two of their
# tests copy a vault directory and open both copies, which on the cluster
# share one keystore, see ARCHITECTURE), but for the kill at every step of
# a passphrase change (its slots and signing keys are rows of the keystore
# cluster there).
conformance() {
  (cd tests && PIVAULT_TEST_KEYSTORE=cluster PIVAULT_TEST_RECORDS=cluster "$e2e" --test-threads 1 "$@")
}
# What needs a cluster alone, run once both lanes are done: the negative
# controls and the one concurrency test that hold a snapshot on purpose (a
# purge waits for every snapshot open on the instance), and the timed model
# runs (which must get enough done in their time).
alone=(
  concurrency::retry_is_audited_under_the_retrier_scoped_for_contractors_and_refuses_complete_batches
  concurrency::concurrent_model_every_acknowledged_write_and_certificate_holds
  server_concurrency::server_concurrent_model_every_acknowledged_write_and_certificate_holds
)
skip_alone=()
for t in "${alone[@]}"; do skip_alone+=(--skip "$t"); done
conformance_disposals=(disposal:: forensic:: crash::)
conformance_rest=(backup:: custodian::an_interrupted_passphrase_change_opens_with_exactly_one_passphrase)
# Lane A: the cluster module and the deletions' resumption, then the
# disposals' conformance. Lane B: the other cluster modules, then the rest
# of the conformance run. About 990 s and 890 s of tests here.
lane_a() {
  local rc=0
  echo "== cluster lane A on $PIVAULT_CLUSTER_DIR (at ${SECONDS} s)"
  mapfile -t names < <(tests_of "${lane_a_modules[@]}")
  [ "${#names[@]}" -gt 0 ] || { echo "no tests found for lane A" >&2; return 1; }
  cluster_tests --exact "${names[@]}" || rc=1
  if [ "${PIVAULT_CONFORMANCE:-1}" != 0 ]; then
    echo "== conformance on lane A: ${conformance_disposals[*]} (at ${SECONDS} s)"
    conformance "${conformance_disposals[@]}" || rc=1
  fi
  echo "== cluster lane A done, rc=$rc (at ${SECONDS} s)"
  return $rc
}
lane_b() {
  local rc=0
  echo "== cluster lane B on $PIVAULT_CLUSTER_DIR (at ${SECONDS} s)"
  mapfile -t names < <(tests_of "${lane_b_modules[@]}")
  [ "${#names[@]}" -gt 0 ] || { echo "no tests found for lane B" >&2; return 1; }
  cluster_tests --exact "${names[@]}" || rc=1
  if [ "${PIVAULT_CONFORMANCE:-1}" != 0 ]; then
    echo "== conformance on lane B: concurrency:: ${conformance_rest[*]} (at ${SECONDS} s)"
    conformance concurrency:: "${conformance_rest[@]}" "${skip_alone[@]}" || rc=1
  fi
  echo "== cluster lane B done, rc=$rc (at ${SECONDS} s)"
  return $rc
}
# Every test the main lane skips as a cluster test must be in a lane: a
# module added to `cluster_modules` but to neither lane would run nowhere.
lane_a_modules=(cluster:: delete_resume_cluster::)
lane_b_modules=(audit_cluster:: cluster_hosting:: header_cluster:: records_cluster:: server_standby:: delete_cluster::)
skipped=$( (cd tests && "$e2e" --list 2>/dev/null) | sed -n 's/: test$//p' | grep -cF "$(printf '%s\n' "${cluster_modules[@]}")" || true)
in_lanes=$(tests_of "${lane_a_modules[@]}" "${lane_b_modules[@]}" | wc -l)
if [ "$skipped" != "$in_lanes" ]; then
  echo "scripts/test.sh: $skipped cluster tests, $in_lanes of them in a lane: give every cluster module a lane" >&2
  exit 1
fi
cluster_lanes() {
  local rc=0
  if [ "$lanes" = 2 ]; then
    on_cluster "$dir_a" "$port_a" lane_a >target/lane-cluster-a.log 2>&1 &
    local a=$!
    on_cluster "$dir_b" "$port_b" lane_b >target/lane-cluster-b.log 2>&1 || rc=1
    wait "$a" || rc=1
    cat target/lane-cluster-a.log target/lane-cluster-b.log
  else
    on_cluster "$dir_a" "$port_a" lane_a || rc=1
    on_cluster "$dir_a" "$port_a" lane_b || rc=1
  fi
  if [ "${PIVAULT_CONFORMANCE:-1}" != 0 ]; then
    echo "== conformance: what needs the cluster alone (at ${SECONDS} s)"
    on_cluster "$dir_a" "$port_a" conformance purge_controls:: || rc=1
    on_cluster "$dir_a" "$port_a" conformance --exact "${alone[@]}" || rc=1
  fi
  echo "== cluster lanes done, rc=$rc (at ${SECONDS} s)"
  return $rc
}
lane_log=target/lane-cluster.log
cluster_lanes >"$lane_log" 2>&1 &
lane=$!
# A lane left running when this script stops early is stopped with it.
trap 'kill $(jobs -p) 2>/dev/null || true; stop_clusters' EXIT

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
