#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, then every test of the
# workspace (unit, property, end-to-end CLI, forensic and crash tests).
# Knobs: PIVAULT_CRASH_ITERATIONS (default 12) for the kill-and-reopen loop.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# One selection everywhere (--workspace --all-targets): any other selection resolves
# different build-dependency features and recompiles RocksDB from scratch.
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast "$@"
