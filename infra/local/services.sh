#!/usr/bin/env bash
# Makes PostgreSQL and NATS (with JetStream) available for `make run` and
# `make test`, and writes their URLs to .local/services.env.
#
# For each server, in order:
#   1. the URL in DATABASE_URL / NATS_URL, when it answers;
#   2. the standard local port (5432 / 4222), when it answers;
#   3. a private instance of this checkout (ports 55432 / 54222, data under
#      .local/), started here; Debian's postgresql and nats-server packages
#      are installed first when missing (apt-get, as root or through sudo).
# Running it again is harmless: what answers is reused.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
state="$root/.local"
mkdir -p "$state"
env_file="$state/services.env"
pg_port="${CALLFLOW_PG_PORT:-55432}"
nats_port="${CALLFLOW_NATS_PORT:-54222}"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@" || die "need root to run: $*"
  else die "need root to run: $* (no sudo)"; fi
}

apt_install() {
  log "installing Debian packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---------------------------------------------------------------- Postgres --

pg_bin() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [ -n "$dir" ] && [ -x "$dir/$1" ] && { echo "$dir/$1"; return; }
  command -v "$1" 2>/dev/null || true
}

pg_answers() { # url
  local psql; psql="$(command -v psql || true)"
  [ -n "$psql" ] || return 1
  PGCONNECT_TIMEOUT=3 "$psql" "$1" -XAtqc 'SELECT 1' >/dev/null 2>&1
}

# A database URL with the path replaced by /<db>.
with_db() { # url db
  local url="$1" db="$2" base query=""
  case "$url" in *\?*) query="?${url#*\?}"; url="${url%%\?*}";; esac
  base="${url%/*}"
  case "$base" in *://) base="$url";; esac
  printf '%s/%s%s' "$base" "$db" "$query"
}

start_private_postgres() {
  local initdb pg_ctl data owner
  if [ -z "$(pg_bin initdb)" ]; then apt_install postgresql postgresql-client; fi
  initdb="$(pg_bin initdb)"; pg_ctl="$(pg_bin pg_ctl)"
  [ -n "$initdb" ] && [ -n "$pg_ctl" ] || die "postgresql is installed but initdb/pg_ctl were not found"
  data="$state/postgres"
  owner="$(id -un)"
  run_pg() { "$@"; }
  if [ "$(id -u)" -eq 0 ]; then
    # Postgres refuses to run as root: run it as the postgres user, with its
    # data in a folder it owns. If it cannot reach the checkout, use /var/tmp.
    owner=postgres
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    if ! su postgres -s /bin/sh -c "test -x '$state'" 2>/dev/null; then
      data="/var/tmp/callflow-$(printf '%s' "$root" | md5sum | cut -c1-8)-postgres"
    fi
    run_pg() { su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; }
    mkdir -p "$data"; chown postgres "$data"; chmod 700 "$data"
  else
    mkdir -p "$data"; chmod 700 "$data"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initialising a private Postgres in $data"
    run_pg "$initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  if ! run_pg "$pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "starting the private Postgres on port $pg_port"
    run_pg "$pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
      -o "-p $pg_port -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on" start >/dev/null
  fi
  echo "postgres://postgres@127.0.0.1:$pg_port/postgres"
}

ensure_postgres() {
  if [ -z "$(command -v psql || true)" ]; then apt_install postgresql-client; fi
  local admin=""
  if [ -n "${DATABASE_URL:-}" ] && pg_answers "$DATABASE_URL"; then
    admin="$DATABASE_URL"; log "Postgres: using DATABASE_URL"
  elif pg_answers "postgres://postgres@127.0.0.1:5432/postgres"; then
    admin="postgres://postgres@127.0.0.1:5432/postgres"; log "Postgres: using the one on 127.0.0.1:5432"
  elif pg_answers "postgres://postgres@127.0.0.1:$pg_port/postgres"; then
    admin="postgres://postgres@127.0.0.1:$pg_port/postgres"; log "Postgres: using the private one on port $pg_port"
  else
    admin="$(start_private_postgres)"
    pg_answers "$admin" || die "the private Postgres did not come up; see its server.log"
  fi
  PG_ADMIN_URL="$admin"
  # The database `make run` uses; tests create their own.
  local app; app="$(with_db "$admin" callflow)"
  if ! pg_answers "$app"; then
    psql "$admin" -XAtqc 'CREATE DATABASE callflow' >/dev/null 2>&1 || true
    pg_answers "$app" || die "cannot create or reach database callflow at $admin"
  fi
  PG_APP_URL="$app"
}

# -------------------------------------------------------------------- NATS --

nats_has_jetstream() { # host port
  local info
  info="$(timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2 && head -n 1 <&3" 2>/dev/null || true)"
  case "$info" in INFO*'"jetstream":true'*) return 0;; *) return 1;; esac
}

host_port() { # nats url -> "host port"
  local rest="${1#*://}"; rest="${rest##*@}"; rest="${rest%%/*}"
  local host="${rest%:*}" port="${rest##*:}"
  [ "$host" = "$rest" ] && port=4222
  echo "$host $port"
}

nats_bin() {
  for candidate in "${NATS_SERVER_BIN:-}" "$(command -v nats-server || true)" /usr/sbin/nats-server /usr/bin/nats-server; do
    [ -n "$candidate" ] && [ -x "$candidate" ] && { echo "$candidate"; return; }
  done
}

ensure_nats() {
  # The tests also start nats-server themselves (to stop it mid-stream).
  if [ -z "$(nats_bin)" ]; then apt_install nats-server; fi
  NATS_BIN="$(nats_bin)"
  [ -n "$NATS_BIN" ] || die "nats-server is not installed and could not be installed"
  if [ -n "${NATS_URL:-}" ] && nats_has_jetstream $(host_port "$NATS_URL"); then
    NATS="$NATS_URL"; log "NATS: using NATS_URL"
  elif nats_has_jetstream 127.0.0.1 4222; then
    NATS="nats://127.0.0.1:4222"; log "NATS: using the one on 127.0.0.1:4222"
  elif nats_has_jetstream 127.0.0.1 "$nats_port"; then
    NATS="nats://127.0.0.1:$nats_port"; log "NATS: using the private one on port $nats_port"
  else
    mkdir -p "$state/nats"
    log "starting a private NATS with JetStream on port $nats_port"
    nohup setsid "$NATS_BIN" -a 127.0.0.1 -p "$nats_port" -js -sd "$state/nats" \
      -l "$state/nats/server.log" -P "$state/nats/server.pid" >/dev/null 2>&1 < /dev/null &
    for _ in $(seq 1 50); do nats_has_jetstream 127.0.0.1 "$nats_port" && break; sleep 0.2; done
    nats_has_jetstream 127.0.0.1 "$nats_port" || die "the private NATS did not come up; see $state/nats/server.log"
    NATS="nats://127.0.0.1:$nats_port"
  fi
}

ensure_postgres
ensure_nats
cat > "$env_file" <<ENV
DATABASE_URL=$PG_APP_URL
CALLFLOW_TEST_DATABASE_URL=$PG_ADMIN_URL
NATS_URL=$NATS
NATS_SERVER_BIN=$NATS_BIN
ENV
log "ready: $(tr '\n' ' ' < "$env_file")"
