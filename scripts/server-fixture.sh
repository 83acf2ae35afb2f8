# Shared by benches/server-load.sh, benches/server-disposals.sh and
# scripts/fuzz-api.sh (sourced, not run): a throwaway vault with an admin,
# an officer, a clerk and the `customers` collection, and the real
# pivault-server started on it over TLS on a free loopback port.
# Secrets live in files under $WORK (mode 0600), never on command lines.
#
# Needs: BIN_DIR (where pivault and pivault-server are). Sourcing it makes
# WORK (a private temp dir, removed on exit with the server stopped); the
# functions set PIVAULT_PASSPHRASE_FILE, PIVAULT_DIR, P, SERVER_PID, URL.

# needs_wrk: installs wrk and curl with apt-get when missing, and checks
# that the binaries are built in BIN_DIR.
needs_wrk() {
  if ! command -v wrk >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk curl
  fi
  [ -x "$BIN_DIR/pivault" ] && [ -x "$BIN_DIR/pivault-server" ] || {
    echo "build first: cargo build --workspace --all-targets (looked in $BIN_DIR)" >&2; exit 2; }
}

WORK=$(mktemp -d)
SERVER_PID=""
fixture_cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap fixture_cleanup EXIT

# vault_fixture [ROLE...]: init with admin, one user per ROLE (default
# officer clerk), and the customers collection. INIT_FLAGS go to `init`.
vault_fixture() {
  local roles=("$@")
  [ ${#roles[@]} -gt 0 ] || roles=(officer clerk)
  printf 'fixture-vault-passphrase-9Tq!' > "$WORK/pass"
  for u in admin "${roles[@]}"; do
    printf 'Fixture-%s-Granite-Otter-64' "$(printf %s "$u" | rev)" > "$WORK/$u.pw"
  done
  chmod 600 "$WORK"/*
  export PIVAULT_PASSPHRASE_FILE="$WORK/pass" PIVAULT_DIR="$WORK/vault"
  P="$BIN_DIR/pivault"
  # A throwaway vault: no second factor to enrol before the fixture is made.
  # shellcheck disable=SC2086
  PIVAULT_PASSWORD_FILE="$WORK/admin.pw" "$P" init --admin admin --two-factor none ${INIT_FLAGS:-} >/dev/null
  for u in "${roles[@]}"; do
    PIVAULT_PASSWORD_FILE="$WORK/admin.pw" PIVAULT_NEW_PASSWORD_FILE="$WORK/$u.pw" \
      "$P" --user admin user add "$u" --role "$u" >/dev/null
  done
  PIVAULT_PASSWORD_FILE="$WORK/admin.pw" \
    "$P" --user admin collection create customers --schema examples/customers.schema.json >/dev/null
}

# start_server [FLAG...]: starts pivault-server with a self-signed
# certificate ($WORK/server.crt) and the flags; sets SERVER_PID, URL
# (https://localhost:PORT, which the certificate names) and URL_IP
# (https://127.0.0.1:PORT, for clients that do not verify, like wrk).
start_server() {
  "$BIN_DIR/pivault-server" --bind 127.0.0.1:0 --self-signed \
    --tls-cert "$WORK/server.crt" --tls-key "$WORK/server.key" \
    --socket "$WORK/pivault.sock" "$@" 2> "$WORK/server.log" &
  SERVER_PID=$!
  URL=""
  for _ in $(seq 1 600); do
    URL=$(sed -nE 's/.*listening on https:\/\/127\.0\.0\.1(:[0-9]+).*/https:\/\/localhost\1/p' "$WORK/server.log")
    [ -n "$URL" ] && break; sleep 0.1
  done
  [ -n "$URL" ] || { cat "$WORK/server.log" >&2; exit 1; }
  URL_IP=${URL/localhost/127.0.0.1}
}

# stop_server: SIGTERM and wait (a graceful stop).
stop_server() {
  kill "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=""
}

# login USER: prints a bearer token for USER.
login() {
  curl -s --cacert "$WORK/server.crt" -X POST "$URL/v1/sessions" -H 'content-type: application/json' \
    --data-binary @<(printf '{"username":"%s","password":"%s"}' "$1" "$(cat "$WORK/$1.pw")") \
    | sed -E 's/.*"token":"([^"]+)".*/\1/'
}
