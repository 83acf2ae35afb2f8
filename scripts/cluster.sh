#!/usr/bin/env bash
# A keystore cluster on loopback for tests, benchmarks and trying it out
# (README "Running on PostgreSQL"): 3 etcd members as Patroni's store and
# 3 PostgreSQL 15 members under Patroni (one primary, two streaming
# standbys, synchronous mode), configured as a keystore cluster must be
# (ARCHITECTURE "Keystore on PostgreSQL"): no WAL archive, WAL segments
# unlinked rather than recycled, the smallest WAL retention Patroni allows,
# logs that never carry a statement's parameters.
#
#   scripts/cluster.sh start   # about 10 s; prints the env file to source
#   scripts/cluster.sh stop
#   scripts/cluster.sh env     # the env file's path
#
# Knobs: PIVAULT_CLUSTER_DIR (default /tmp/pivault-cluster), PIVAULT_CLUSTER_PORT
# (default 55400: etcd 55401-3/55411-3, Patroni REST 55421-3, PostgreSQL 55431-3).
# As root, PostgreSQL and Patroni run as the `postgres` user.
set -euo pipefail
# None of libpq's variables from the caller's shell: PGPASSWORD is taken
# before a passfile (another cluster's superuser password would fail the
# standbys' base backups), PGTARGETSESSIONATTRS would send the standby
# checks to the primary, and so on. Each call here names what it needs.
for v in $(compgen -e); do
  case $v in PG*) unset "$v" ;; esac
done
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIR=${PIVAULT_CLUSTER_DIR:-/tmp/pivault-cluster}
BASE=${PIVAULT_CLUSTER_PORT:-55400}
PGBIN=/usr/lib/postgresql/15/bin
ENVFILE=$DIR/cluster.env

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

stop() {
  # Every process of this cluster names its directory on its command line
  # (etcd's data dir, Patroni's config file, PostgreSQL's data dir).
  local pat="$DIR/(etcd[123]|patroni[123]\.yml|pg[123])( |$)"
  pkill -TERM -f "$pat" 2>/dev/null || true
  # Patroni stops its PostgreSQL on SIGTERM; wait for every member to go.
  for _ in $(seq 1 100); do
    pgrep -f "$pat" >/dev/null 2>&1 || break
    sleep 0.1
  done
  pkill -KILL -f "$pat" 2>/dev/null || true
  rm -f "$DIR"/*.pid
}

start() {
  command -v patroni >/dev/null && command -v etcd >/dev/null && [ -x "$PGBIN/postgres" ] || {
    echo "cluster: patroni, etcd and PostgreSQL 15 are needed: ./scripts/setup.sh installs them" >&2
    exit 1
  }
  stop
  rm -rf "$DIR"
  mkdir -p "$DIR"
  chmod 0755 "$DIR"
  # Passwords for this throw-away cluster, fresh each start.
  umask 077
  head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$DIR/superuser.password"
  head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$DIR/replication.password"
  head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$DIR/pivault.password"
  head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$DIR/provider.password"
  umask 022
  local su rep
  su=$(cat "$DIR/superuser.password")
  rep=$(cat "$DIR/replication.password")
  local cluster="" i
  for i in 1 2 3; do
    cluster+="etcd$i=http://127.0.0.1:$((BASE + 10 + i)),"
  done
  cluster=${cluster%,}
  for i in 1 2 3; do
    mkdir -p "$DIR/etcd$i"
    etcd --name "etcd$i" --data-dir "$DIR/etcd$i" --enable-v2=true \
      --listen-client-urls "http://127.0.0.1:$((BASE + i))" \
      --advertise-client-urls "http://127.0.0.1:$((BASE + i))" \
      --listen-peer-urls "http://127.0.0.1:$((BASE + 10 + i))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((BASE + 10 + i))" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token pivault-keys --log-level error \
      > "$DIR/etcd$i.log" 2>&1 &
    echo $! > "$DIR/etcd$i.pid"
  done
  for _ in $(seq 1 100); do
    ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$((BASE + 1))" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
  done
  # TLS: a CA of this cluster's own, and a certificate per member naming
  # the address clients connect to (verify-full in pivault).
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=pivault keystore cluster CA" -keyout "$DIR/ca.key" -out "$DIR/ca.crt" 2>/dev/null
  for i in 1 2 3; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/CN=pg$i" -keyout "$DIR/server$i.key" -out "$DIR/server$i.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' \
      > "$DIR/server$i.ext"
    openssl x509 -req -in "$DIR/server$i.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" \
      -CAcreateserial -days 3650 -extfile "$DIR/server$i.ext" -out "$DIR/server$i.crt" 2>/dev/null
    chmod 0600 "$DIR/server$i.key"
  done
  rm -f "$DIR/ca.key"
  for i in 1 2 3; do
    local pg=$((BASE + 30 + i)) rest=$((BASE + 20 + i))
    mkdir -p "$DIR/sock$i"
    cat > "$DIR/patroni$i.yml" <<EOF
scope: pivault-keys
name: pg$i
restapi:
  listen: 127.0.0.1:$rest
  connect_address: 127.0.0.1:$rest
etcd:
  hosts: 127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2)),127.0.0.1:$((BASE + 3))
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        hot_standby_feedback: "off"
        # A standby query conflicting with replay (any vault's role can run
        # one) is cancelled after 5 s, well before a purge gives up waiting
        # for that standby's replay (20 s; doctor fails a member above 10 s).
        max_standby_streaming_delay: 5s
        archive_mode: "off"
        wal_recycle: "off"
        wal_init_zero: "on"
        wal_keep_size: 16MB
        max_slot_wal_keep_size: 64MB
        min_wal_size: 32MB
        max_wal_size: 64MB
        max_wal_senders: 10
        max_replication_slots: 10
        max_prepared_transactions: 0
        log_statement: none
        log_error_verbosity: terse
        log_parameter_max_length: 0
        log_parameter_max_length_on_error: 0
        log_min_duration_statement: -1
  initdb:
    - encoding: UTF8
    - auth-host: scram-sha-256
    - auth-local: trust
postgresql:
  # The whole pg_hba.conf (Patroni writes it from this list; bootstrap's
  # pg_hba would only be appended after initdb's own lines, which would
  # match first): vault roles and the provider only over TLS.
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - hostnossl all +pivault_vaults 127.0.0.1/32 reject
    - hostnossl all pivault_provider 127.0.0.1/32 reject
    - host all all 127.0.0.1/32 scram-sha-256
  listen: 127.0.0.1:$pg
  connect_address: 127.0.0.1:$pg
  data_dir: $DIR/pg$i
  bin_dir: $PGBIN
  pgpass: $DIR/pgpass$i
  authentication:
    superuser: {username: postgres, password: "$su"}
    replication: {username: replicator, password: "$rep"}
  parameters:
    unix_socket_directories: $DIR/sock$i
    ssl: "on"
    ssl_cert_file: $DIR/server$i.crt
    ssl_key_file: $DIR/server$i.key
    ssl_min_protocol_version: TLSv1.2
tags: {nofailover: false, noloadbalance: false, clonefrom: false, nosync: false}
EOF
  done
  chown -R postgres: "$DIR" 2>/dev/null || true
  chmod 0600 "$DIR"/*.password
  for i in 1 2 3; do
    as_pg patroni "$DIR/patroni$i.yml" > "$DIR/patroni$i.log" 2>&1 &
    echo $! > "$DIR/patroni$i.pid"
    # The first member bootstraps; the others clone from it.
    [ "$i" -eq 1 ] && sleep 1
  done
  # Ready: a primary and two streaming standbys.
  local ok=0
  for _ in $(seq 1 300); do
    n=$(PGPASSWORD=$su psql -h 127.0.0.1 -p $((BASE + 31)) -U postgres -tAc \
      "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'" 2>/dev/null || true)
    if [ "$n" = "2" ]; then ok=1; break; fi
    # The primary may be another member after a slow start.
    for i in 2 3; do
      n=$(PGPASSWORD=$su psql -h 127.0.0.1 -p $((BASE + 30 + i)) -U postgres -tAc \
        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'" 2>/dev/null || true)
      if [ "$n" = "2" ]; then ok=1; break 2; fi
    done
    sleep 0.1
  done
  if [ $ok -ne 1 ]; then
    echo "cluster: no primary with 2 streaming standbys after 30 s; logs in $DIR" >&2
    tail -20 "$DIR"/patroni*.log >&2
    exit 1
  fi
  local primary=""
  for i in 1 2 3; do
    r=$(PGPASSWORD=$su psql -h 127.0.0.1 -p $((BASE + 30 + i)) -U postgres -tAc "SELECT pg_is_in_recovery()" 2>/dev/null || true)
    [ "$r" = "f" ] && primary=$((BASE + 30 + i))
  done
  PGPASSWORD=$su psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$primary" -U postgres -d postgres \
    -v pw="$(cat "$DIR/pivault.password")" -v provider_pw="$(cat "$DIR/provider.password")" \
    -f "$ROOT/scripts/keystore-cluster.sql" >/dev/null
  # Ready only once every standby has replayed the roles just made (a
  # standby that has not yet would refuse them a login).
  local lsn
  lsn=$(PGPASSWORD=$su psql -h 127.0.0.1 -p "$primary" -U postgres -tAc "SELECT pg_current_wal_lsn()")
  for i in 1 2 3; do
    [ "$((BASE + 30 + i))" = "$primary" ] && continue
    for _ in $(seq 1 200); do
      [ "$(PGPASSWORD=$su psql -h 127.0.0.1 -p $((BASE + 30 + i)) -U postgres -tAc \
        "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn" 2>/dev/null || true)" = "t" ] && break
      sleep 0.1
    done
  done
  # The password files are the vaults' and the provider's (read by whoever runs pivault).
  chown "$(id -u):$(id -g)" "$DIR/pivault.password" "$DIR/provider.password"
  cat > "$ENVFILE" <<EOF
export PIVAULT_PG_MEMBERS=127.0.0.1:$((BASE + 31)),127.0.0.1:$((BASE + 32)),127.0.0.1:$((BASE + 33))
export PIVAULT_PG_PASSWORD_FILE=$DIR/pivault.password
export PIVAULT_PG_PROVIDER_PASSWORD_FILE=$DIR/provider.password
export PIVAULT_PG_SUPERUSER_PASSWORD_FILE=$DIR/superuser.password
export PIVAULT_PG_DATA_DIRS=$DIR/pg1:$DIR/pg2:$DIR/pg3
export PIVAULT_PG_PATRONI=127.0.0.1:$((BASE + 21)),127.0.0.1:$((BASE + 22)),127.0.0.1:$((BASE + 23))
export PIVAULT_PG_CLUSTER_DIR=$DIR
export PIVAULT_PG_CA_FILE=$DIR/ca.crt
EOF
  chmod 0644 "$ENVFILE"
  echo "$ENVFILE"
}

# One member down (its Patroni and PostgreSQL killed, as a host that dies)
# and back (Patroni rejoins it as a standby, rewinding it if it was the
# primary). For the tests of a member that cannot be verified and of a
# failover.
member_stop() {
  local i=$1
  pkill -KILL -f "$DIR/patroni$i\.yml( |$)" 2>/dev/null || true
  pkill -KILL -f "$DIR/pg$i( |$)" 2>/dev/null || true
  for _ in $(seq 1 50); do
    pgrep -f "$DIR/(patroni$i\.yml|pg$i)( |$)" >/dev/null 2>&1 || return 0
    sleep 0.1
  done
}

member_start() {
  local i=$1
  local pg=$((BASE + 30 + i)) log="$DIR/patroni$i.log"
  local from
  from=$(( $(stat -c %s "$log" 2>/dev/null || echo 0) + 1 ))
  pgrep -f "$DIR/patroni$i\.yml( |$)" >/dev/null 2>&1 ||
    { as_pg patroni "$DIR/patroni$i.yml" >> "$log" 2>&1 & }
  # A member that was down across a purge finds the WAL it needs removed
  # (that is the point of the purge): it cannot catch up by streaming, so
  # it is re-cloned from the primary. Its old data directory, which may
  # still hold destroyed keys, is wiped by that: until then the vault
  # cannot verify it and certifies nothing.
  # An old primary that cannot rewind onto the new timeline (its WAL
  # purged too) stays stuck before a consistent state: re-cloned as well
  # when it is not streaming after 20 s.
  local su recloned=0 n=0 next_reinit=0
  su=$(cat "$DIR/superuser.password")
  for n in $(seq 1 600); do
    if [ "$(PGPASSWORD=$su psql -h 127.0.0.1 -p "$pg" -U postgres -tAc \
        "SELECT status FROM pg_stat_wal_receiver" 2>/dev/null || true)" = "streaming" ]; then
      return 0
    fi
    # Patroni exits at once when its REST port is taken: the cluster's
    # ports lie in Linux's ephemeral range, so an outgoing connection may
    # hold it for a while after the member went down ("Address already in
    # use"). Start it again every 2 s until it stays up.
    if [ $((n % 10)) -eq 0 ] && ! pgrep -f "$DIR/patroni$i\.yml( |$)" >/dev/null 2>&1; then
      echo "pivault: patroni$i is not running; starting it again" >> "$log"
      { as_pg patroni "$DIR/patroni$i.yml" >> "$log" 2>&1 & }
    fi
    # Re-cloned once Patroni runs (a re-clone of a member Patroni does not
    # know fails: "No replica among provided members"), until one succeeds.
    if [ $recloned -eq 0 ] && [ "$n" -ge "$next_reinit" ] &&
        { tail -c "+$from" "$log" | grep -q "has already been removed" || [ "$n" -ge 100 ]; } &&
        pgrep -f "$DIR/patroni$i\.yml( |$)" >/dev/null 2>&1; then
      echo "pivault: re-cloning pg$i (the WAL it needs was purged)" >> "$log"
      if as_pg patronictl -c "$DIR/patroni$i.yml" reinit pivault-keys "pg$i" --force --wait >> "$log" 2>&1; then
        recloned=1
      fi
      next_reinit=$((n + 25))
    fi
    sleep 0.2
  done
  echo "cluster: pg$i is not streaming after 120 s; see $log" >&2
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) echo "$ENVFILE" ;;
  member-stop) member_stop "$2" ;;
  member-start) member_start "$2" ;;
  *) echo "usage: $0 start|stop|env|member-stop N|member-start N" >&2; exit 2 ;;
esac
