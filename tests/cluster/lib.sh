# tests/cluster/lib.sh - shell helpers of the cluster tests and benchmark (sourced, not run):
# a PostgreSQL server of the test's own, processes started in the background and killed at the
# end whatever happens, and small polling helpers.
#
# The caller sets `work` (a temporary directory) before sourcing and calls cl_cleanup from its
# EXIT trap. Should the caller die without running it (SIGKILL, a CTest timeout), a watchdog
# started with the server does the same: kills the processes cl_bg started, stops PostgreSQL,
# removes its directory and $work. Nothing of a test outlives it.

CL_SRC=${SL_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CL_PIDS=()

# cl_pg_available: the PostgreSQL server binaries are installed (Debian's postgresql-15;
# scripts/deps.sh test installs them). Tests skip (exit 77, which CTest reports as skipped) when
# they are not, with a message saying so.
cl_pg_available() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && return 0; done
  [ -n "${PGBIN:-}" ] && [ -x "$PGBIN/pg_ctl" ]
}

# cl_pg_start: starts PostgreSQL in a directory of its own (CL_PGDIR: the server runs as the
# postgres user when we are root, and $work is private to us), sets PGURL, starts the watchdog.
CL_PGDIR=""
cl_pg_start() {
  CL_PGDIR=$(mktemp -d "${TMPDIR:-/tmp}/sl-pg.XXXXXX")
  rmdir "$CL_PGDIR"
  : > "$work/.cl_pids"
  # in a session of its own (setsid -f: not our child, so `wait` does not wait for it), so that
  # what kills the test's process group does not kill it
  setsid -f bash -c '
    owner=$1 pg=$2 dir=$3 work=$4
    echo $$ > "$work/.cl_watchdog"
    trap "" HUP INT TERM
    while kill -0 "$owner" 2>/dev/null; do sleep 1; done
    [ -f "$work/.cl_pids" ] && while read -r p; do
      grep -qa shoplens "/proc/$p/cmdline" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done < "$work/.cl_pids"
    bash "$pg" stop "$dir" 2>/dev/null
    rm -rf "$dir" "$work"' cl-watchdog "$$" "$CL_SRC/tests/cluster/pg.sh" "$CL_PGDIR" "$work" \
    </dev/null >/dev/null 2>&1
  PGURL=$(bash "$CL_SRC/tests/cluster/pg.sh" start "$CL_PGDIR") || return 1
}
cl_pg() { bash "$CL_SRC/tests/cluster/pg.sh" "$1" "$CL_PGDIR" "${@:2}"; }
# cl_sql SQL: one value (unaligned, no header) from the cluster database.
cl_sql() { cl_pg psql -At -c "$1"; }

# cl_bg NAME CMD...: runs CMD in the background with stderr in $work/NAME.log; sets CL_PID.
cl_bg() {
  local name=$1; shift
  "$@" >"$work/$name.out" 2>"$work/$name.log" &
  CL_PID=$!
  CL_PIDS+=("$CL_PID")
  [ -f "$work/.cl_pids" ] && echo "$CL_PID" >> "$work/.cl_pids"
  return 0
}

cl_cleanup() {
  local p
  for p in "${CL_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$CL_PGDIR" ] && [ -d "$CL_PGDIR" ]; then
    cl_pg stop || true
    rm -rf "$CL_PGDIR"
  fi
  if [ -s "$work/.cl_watchdog" ]; then kill -KILL "$(cat "$work/.cl_watchdog")" 2>/dev/null || true; fi
}

# cl_poll TRIES CMD...: runs CMD every 0.1 s until it succeeds; status 1 after TRIES attempts.
cl_poll() {
  local tries=$1; shift
  for _ in $(seq 1 "$tries"); do "$@" && return 0; sleep 0.1; done
  return 1
}

# cl_json FILE EXPR: a Python expression over the JSON document in FILE (d).
cl_json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
