#!/usr/bin/env bash
# The main job, end to end, on an embedded vault in ./demo-vault:
# create a vault, add staff, define a collection, import and store customer
# records, read one masked and revealed, destroy one provably (crypto-shredding)
# and verify its certificate offline, verify the audit trail, run doctor.
# Secrets are passed as files (mode 0600), never as flags. The custodian
# holds the vault passphrase and starts pivault-server; staff (admin,
# officer, clerk) work through the server's local socket with their own
# passwords and never see the passphrase.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# The same build selection as the tests, so RocksDB is compiled once.
cargo build --workspace --all-targets
PIVAULT="${CARGO_TARGET_DIR:-$PWD/target}/debug/pivault"

VAULT="$PWD/demo-vault"
rm -rf "$VAULT"
SECRETS="$PWD/demo-secrets"; rm -rf "$SECRETS"; mkdir -m 700 "$SECRETS"

umask 077
# Demo-only secrets, random per run.
head -c 24 /dev/urandom | base64 > "$SECRETS/passphrase"
for u in admin officer clerk; do head -c 18 /dev/urandom | base64 > "$SECRETS/$u"; done

export PIVAULT_DIR="$VAULT" PIVAULT_SOCKET="$SECRETS/pivault.sock"
# Login tokens and profiles of the demo's staff stay with the demo's secrets.
export XDG_CONFIG_HOME="$SECRETS/config"
# The custodian's own commands open the vault directory with the passphrase.
custodian() { PIVAULT_PASSPHRASE_FILE="$SECRETS/passphrase" "$PIVAULT" "$@"; }
# Staff: their username and password, through the socket; no passphrase.
as() { local who=$1; shift; PIVAULT_USER=$who PIVAULT_PASSWORD_FILE="$SECRETS/$who" "$PIVAULT" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
SERVER_PID=""
stop_server() { [ -z "$SERVER_PID" ] || { kill "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=""; }; }
trap stop_server EXIT

step "the custodian creates the vault and its first admin"
PIVAULT_PASSWORD_FILE="$SECRETS/admin" custodian init --admin admin

step "the custodian unseals it once in pivault-server (local socket for staff)"
PIVAULT_PASSPHRASE_FILE="$SECRETS/passphrase" "${PIVAULT%/pivault}/pivault-server" \
  --bind 127.0.0.1:0 --socket "$PIVAULT_SOCKET" --checkpoint-secs 0 2> "$SECRETS/server.log" &
SERVER_PID=$!
for _ in $(seq 1 300); do [ -S "$PIVAULT_SOCKET" ] && break; sleep 0.1; done
[ -S "$PIVAULT_SOCKET" ] || { cat "$SECRETS/server.log"; exit 1; }
grep "listening" "$SECRETS/server.log"

# Two-factor sign-in is required of admins, officers and contractors: a
# password-only login may only enrol. oathtool (Debian's package) plays the
# staff member's authenticator app here; the code goes through a file, never
# a flag.
enrol() {
  local who=$1 secret
  as "$who" login
  secret=$(as "$who" --json two-factor enrol | sed -E 's/.*"secret":"([A-Z2-7]+)".*/\1/')
  # Kept with the demo's other secrets, so the demo's staff can sign in again.
  printf '%s\n' "$secret" > "$SECRETS/$who.totp"
  oathtool --totp -b "$secret" > "$SECRETS/$who.code"
  PIVAULT_CODE_FILE="$SECRETS/$who.code" as "$who" two-factor confirm
}

step "the admin signs in and enrols a second factor (a login that may only enrol, until then)"
enrol admin

step "add a security officer and a clerk; each logs in once (a token, not a password per command)"
PIVAULT_NEW_PASSWORD_FILE="$SECRETS/officer" as admin user add officer --role officer
PIVAULT_NEW_PASSWORD_FILE="$SECRETS/clerk" as admin user add clerk --role clerk
enrol officer
as clerk login
as admin user list

step "define what we store about customers (examples/customers.schema.json)"
as admin collection create customers --schema examples/customers.schema.json

step "import customer records (examples/customers.jsonl)"
as clerk record import customers examples/customers.jsonl
cat > "$SECRETS/new.json" <<'JSON'
{"given_name": "Katherine", "family_name": "Johnson", "ssn": "219-09-9998", "card": "5500 0000 0000 0004"}
JSON
ID=$(as clerk record put customers --subject C-1004 --data "$SECRETS/new.json")
echo "stored record $ID"
as clerk record list --collection customers

step "the clerk reads it: sensitive fields masked"
as clerk record get "$ID"

step "the officer reveals the SSN with a reason (audited)"
as officer record get "$ID" --reveal ssn --reason "identity check requested by customer"

step "a clerk may not reveal"
as clerk record get "$ID" --reveal ssn --reason "curious" || echo "(refused, exit $?)"

step "the customer asks to be forgotten: dispose of their record, with a certificate"
CERT=$(as officer --json dispose subject C-1004 --yes --data-owner "Demo Hardware LLC" \
  | sed -E 's/.*"certificate_id":"([^"]+)".*/\1/')
echo "certificate $CERT"
as clerk record get "$ID" || echo "(the record answers 'disposed', exit $?)"
as officer keys export --out "$SECRETS/keys" >/dev/null
as officer certificate export "$CERT" --out "$SECRETS/certificate.json"
# Anyone can check it offline, with the public key only (no vault, no password):
env -u PIVAULT_DIR "$PIVAULT" certificate verify "$SECRETS/certificate.json" --key "$SECRETS/keys/certificate.pem"

step "the audit trail: last events, then verification"
as officer audit log --limit 8
as officer audit verify
as officer audit log --limit 3 --action record.create --json | grep -o '"source":"uid=[^"]*"' | sed -n 1p | sed 's/^/the audit trail names the OS user: /'
as officer review

step "the nightly retention script: its own token, no password, no access to records"
as officer retention set customers --days 2555
as officer service add nightly-retention --token-file "$SECRETS/nightly.token"
nightly() { PIVAULT_SERVICE_TOKEN_FILE="$SECRETS/nightly.token" "$PIVAULT" "$@"; }
nightly retention due
nightly record list || echo "(refused, exit $?)"
as officer service list

step "the custodian stops the server (staff sessions end) and runs doctor"
stop_server
custodian doctor || true

step "nothing readable on disk"
if grep -rqa "219-09-9998\|219099998\|5500000000000004" "$VAULT"; then echo "PLAINTEXT FOUND"; exit 1; else echo "no SSN or card number found in any file under $VAULT"; fi

cat <<MSG

Done. The vault is in $VAULT; its random demo secrets (passphrase, passwords) are
in $SECRETS. Staff commands go through pivault-server: start it as above
(PIVAULT_PASSPHRASE_FILE=$SECRETS/passphrase pivault-server --socket $SECRETS/pivault.sock),
then try (the officer's authenticator app is oathtool on $SECRETS/officer.totp):
  oathtool --totp -b "\$(cat $SECRETS/officer.totp)" | PIVAULT_SOCKET=$SECRETS/pivault.sock PIVAULT_USER=officer \\
    PIVAULT_PASSWORD_FILE=$SECRETS/officer $PIVAULT --code-file - audit report
The certificate of destruction is $SECRETS/certificate.json ($PIVAULT certificate render FILE for print).
Next: README.md (commands, schema format, exit codes),
ARCHITECTURE.md (how the keys and the audit trail work), and
pivault --help.
MSG
