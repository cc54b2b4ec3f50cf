#!/usr/bin/env bash
# tests/cluster/pg.sh - a throwaway PostgreSQL 15 server for the cluster tests and benchmarks.
#
#   pg.sh start DIR    initdb in DIR (a new directory), start the server on a free loopback port
#                      and a unix socket in DIR, create the database "shoplens"; prints the URL
#   pg.sh stop DIR     fast shutdown (waits); a no-op when it is not running
#   pg.sh restart DIR  stop + start on the same port (the URL stays valid)
#   pg.sh kill DIR     SIGKILL the postmaster (a crash); `start` again recovers
#   pg.sh url DIR      prints the URL
#   pg.sh psql DIR ... runs psql on the database (as the caller: a client needs no server user)
#
# PostgreSQL refuses to run as root: as root the server runs as the `postgres` system user that
# Debian's postgresql-common package creates, or `nobody` where there is none, or the user named
# by SL_PG_OS_USER (DIR is given to it; setpriv is in util-linux, which every Debian root has).
# The server binaries are found under /usr/lib/postgresql/*/bin (not on PATH) or in $PGBIN.
# Trust authentication on loopback only: the server is reachable from this machine alone, and
# lives as long as the test.
set -euo pipefail
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PGBIN/pg_ctl" ] || { echo "pg.sh: no PostgreSQL server binaries (install postgresql-15)" >&2; exit 2; }
cmd=${1:?usage: pg.sh start|stop|restart|kill|url|psql DIR}
dir=${2:?usage: pg.sh $cmd DIR}

if [ "$(id -u)" = 0 ]; then
  os_user=${SL_PG_OS_USER:-$(id -u postgres >/dev/null 2>&1 && echo postgres || echo nobody)}
  os_uid=$(id -u "$os_user") && os_gid=$(id -g "$os_user") || { echo "pg.sh: no user $os_user" >&2; exit 2; }
fi
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    # from /: the caller's directory may be closed to that user ("could not change directory")
    (cd / && setpriv --reuid="$os_uid" --regid="$os_gid" --clear-groups --reset-env -- env PATH=/usr/bin:/bin HOME=/ "$@")
  else
    "$@"
  fi
}

port_of() { cat "$dir/port"; }
url_of() { echo "postgresql://postgres@127.0.0.1:$(port_of)/shoplens"; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_server() {
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $(port_of) -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=64MB -c fsync=on" \
    start >/dev/null
}

case $cmd in
  start)
    if [ -f "$dir/port" ]; then
      start_server
      url_of
      exit 0
    fi
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown "$os_uid:$os_gid" "$dir"; chmod 700 "$dir"; fi
    as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; exit 1; }
    free_port > "$dir/port"
    start_server
    as_pg "$PGBIN/createdb" -h 127.0.0.1 -p "$(port_of)" -U postgres shoplens
    url_of
    ;;
  stop)
    [ -f "$dir/data/postmaster.pid" ] || exit 0
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    ;;
  restart)
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
    start_server
    ;;
  kill)
    pid=$(head -1 "$dir/data/postmaster.pid")
    kill -KILL "$pid"
    # the children go with the postmaster; wait until the port is free
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    ;;
  url) url_of ;;
  psql) shift 2; "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$(port_of)" -U postgres -d shoplens "$@" ;;
  *) echo "pg.sh: unknown command $cmd" >&2; exit 2 ;;
esac
