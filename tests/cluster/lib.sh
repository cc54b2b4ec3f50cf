# tests/cluster/lib.sh - shell helpers of the cluster tests and benchmark (sourced, not run):
# a PostgreSQL server of the test's own, processes started in the background and killed at the
# end whatever happens, and small polling helpers.
#
# The caller sets `work` (a temporary directory) before sourcing and calls cl_cleanup from its
# EXIT trap.

CL_SRC=${SL_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CL_PIDS=()

# cl_pg_start: starts PostgreSQL in a directory of its own (CL_PGDIR: the server runs as the
# postgres user when we are root, and $work is private to us), sets PGURL.
CL_PGDIR=""
cl_pg_start() {
  CL_PGDIR=$(mktemp -d "${TMPDIR:-/tmp}/sl-pg.XXXXXX")
  rmdir "$CL_PGDIR"
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
}

cl_cleanup() {
  local p
  for p in "${CL_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$CL_PGDIR" ] && [ -d "$CL_PGDIR" ]; then
    cl_pg stop || true
    rm -rf "$CL_PGDIR"
  fi
}

# cl_poll TRIES CMD...: runs CMD every 0.1 s until it succeeds; status 1 after TRIES attempts.
cl_poll() {
  local tries=$1; shift
  for _ in $(seq 1 "$tries"); do "$@" && return 0; sleep 0.1; done
  return 1
}

# cl_json FILE EXPR: a Python expression over the JSON document in FILE (d).
cl_json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
