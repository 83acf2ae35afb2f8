#!/usr/bin/env bash
# Installs what a fresh Debian machine with a Rust toolchain lacks to build
# and test pivault: clang and libclang for RocksDB's bindings (bindgen), a
# C++ compiler for RocksDB itself, strace, openssl and age for the tests.
# Idempotent; quiet when all is there.
set -euo pipefail

need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
ldconfig -p 2>/dev/null | grep -q 'libclang\(-[0-9.]*\)\?\.so' || need+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
# Tests: fault injection on the vault's files (strace), a throw-away RFC 3161
# time-stamp authority for the audit-anchor tests (openssl).
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The demo's and the tests' authenticator app for two-factor sign-in (an
# independent RFC 6238 implementation): oathtool.
command -v oathtool >/dev/null 2>&1 || need+=(oathtool)
# The web page's browser tests: headless Chromium under chromedriver.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# ... and axe-core, run in that browser on every page, from the npm registry.
command -v npm >/dev/null 2>&1 || need+=(npm)
# The export tests open pivault's encrypted exports with the real `age` tool
# (and `script`, util-linux, for its passphrase prompt).
command -v age >/dev/null 2>&1 || need+=(age)
command -v script >/dev/null 2>&1 || need+=(bsdutils)
# The keystore-cluster tests (issue 16): PostgreSQL 15 under Patroni, with
# etcd as Patroni's store; scripts/cluster.sh starts them on loopback.
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
command -v patroni >/dev/null 2>&1 || need+=(patroni)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client-15)
# The cluster's CA and member certificates (TLS to the keystore cluster).
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The disposal question's test runs the CLI on a pseudo-terminal (script).
command -v script >/dev/null 2>&1 || need+=(bsdutils)
# cluster.sh finds its members' processes by their command lines, and runs
# them as `postgres` when started as root.
command -v pkill >/dev/null 2>&1 || need+=(procps)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
# The certificate PDF tests open the PDF with poppler (pdfinfo, pdftotext, pdfdetach).
command -v pdfdetach >/dev/null 2>&1 || need+=(poppler-utils)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# axe-core for the web page's accessibility check, pinned, into the
# git-ignored target/axe (the browser tests read
# target/axe/node_modules/axe-core/axe.min.js, or $PIVAULT_AXE).
AXE_VERSION=4.14.1
root="$(cd "$(dirname "$0")/.." && pwd)"
axe="$root/target/axe/node_modules/axe-core"
if ! grep -qs "\"version\": \"$AXE_VERSION\"" "$axe/package.json"; then
  echo "setup: installing axe-core $AXE_VERSION into target/axe" >&2
  npm install --prefix "$root/target/axe" --no-audit --no-fund --silent "axe-core@$AXE_VERSION"
fi

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2; exit 1; }
