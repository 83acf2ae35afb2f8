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

WORK=$(mktemp -d)
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

printf 'fuzz-vault-passphrase-7Rw#' > "$WORK/pass"
for u in admin officer clerk auditor contractor; do printf 'Fuzz-%s-Granite-Otter-64' "$(printf %s "$u" | rev)" > "$WORK/$u.pw"; done
chmod 600 "$WORK"/*
export PIVAULT_PASSPHRASE_FILE="$WORK/pass" PIVAULT_DIR="$WORK/vault"
P="$BIN_DIR/pivault"
PIVAULT_PASSWORD_FILE="$WORK/admin.pw" "$P" init --admin admin --insecure-fast-kdf >/dev/null
for u in officer clerk auditor contractor; do
  PIVAULT_PASSWORD_FILE="$WORK/admin.pw" PIVAULT_NEW_PASSWORD_FILE="$WORK/$u.pw" \
    "$P" --user admin user add "$u" --role "$u" >/dev/null
done
PIVAULT_PASSWORD_FILE="$WORK/admin.pw" \
  "$P" --user admin collection create customers --schema examples/customers.schema.json >/dev/null
PIVAULT_PASSWORD_FILE="$WORK/clerk.pw" \
  "$P" --user clerk record import customers examples/customers.jsonl >/dev/null

"$BIN_DIR/pivault-server" --bind 127.0.0.1:0 --self-signed --tls-cert "$WORK/server.crt" \
  --tls-key "$WORK/server.key" --logins-per-minute 1000000 --requests-per-second 1000000 \
  2> "$WORK/server.log" &
SERVER_PID=$!
URL=""
for _ in $(seq 1 600); do
  URL=$(sed -nE 's/.*listening on https:\/\/127\.0\.0\.1(:[0-9]+).*/https:\/\/localhost\1/p' "$WORK/server.log")
  [ -n "$URL" ] && break; sleep 0.1
done
[ -n "$URL" ] || { cat "$WORK/server.log" >&2; exit 1; }

status=0
cd "$WORK"   # schemathesis keeps its cache in the working directory
for u in clerk officer admin auditor contractor; do
  TOKEN=$(curl -s --cacert "$WORK/server.crt" -X POST "$URL/v1/sessions" -H 'content-type: application/json' \
    --data-binary @<(printf '{"username":"%s","password":"%s"}' "$u" "$(cat "$WORK/$u.pw")") \
    | sed -E 's/.*"token":"([^"]+)".*/\1/')
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
