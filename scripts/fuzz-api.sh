#!/usr/bin/env bash
# Schema-driven API fuzzing of pivault-server with schemathesis (PyPI).
#
# Starts the real server over TLS on a throwaway vault, then lets
# schemathesis generate requests from the served OpenAPI document
# (/v1/openapi.json) as each role in turn, checking that no request gets a
# 5xx and that the server stays up. Exit 0 only if every run passed and
# /healthz still answers.
#
# Usage:  scripts/fuzz-api.sh            (MAX_EXAMPLES=30 per operation)
#         MAX_EXAMPLES=200 scripts/fuzz-api.sh
# Needs:  python3 with venv (a venv under ${FUZZ_VENV:-.fuzz-venv} is created),
#         the binaries built (`cargo build --workspace --all-targets`).
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXAMPLES=${MAX_EXAMPLES:-30}
BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}
VENV=$(realpath -m "${FUZZ_VENV:-.fuzz-venv}")

if [ ! -x "$VENV/bin/st" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'schemathesis>=4,<5'
fi
[ -x "$BIN_DIR/pivault-server" ] || { echo "build first: cargo build --workspace --all-targets" >&2; exit 2; }

. scripts/server-fixture.sh
INIT_FLAGS=--insecure-fast-kdf vault_fixture officer clerk auditor contractor
PIVAULT_PASSWORD_FILE="$WORK/clerk.pw" \
  "$P" --user clerk record import customers examples/customers.jsonl >/dev/null

start_server --logins-per-minute 1000000 --requests-per-second 1000000

status=0
cd "$WORK"   # schemathesis keeps its cache in the working directory
for u in clerk officer admin auditor contractor; do
  TOKEN=$(login "$u")
  echo "== fuzzing as $u"
  # Logging out would end the run's token; it is fuzzed without a token instead.
  "$VENV/bin/st" run "$URL/v1/openapi.json" --tls-verify "$WORK/server.crt" \
    -H "Authorization: Bearer $TOKEN" --checks not_a_server_error \
    --exclude-path /v1/sessions/current --max-examples "$MAX_EXAMPLES" --workers 1 \
    --phases examples,coverage,fuzzing || status=1
done
echo "== the same without a token"
"$VENV/bin/st" run "$URL/v1/openapi.json" --tls-verify "$WORK/server.crt" \
  --checks not_a_server_error --max-examples "$MAX_EXAMPLES" --workers 1 || status=1

curl -sf --cacert "$WORK/server.crt" "$URL/healthz" >/dev/null || { echo "the server is down" >&2; status=1; }
kill -0 "$SERVER_PID" || status=1
exit $status
