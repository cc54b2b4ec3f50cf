# tests/server/lib.sh - shell helpers shared by tests/e2e_server.sh, tests/e2e_web.sh and
# bench/server/run.sh (sourced, not run).

# sl_serve_url LOG PID [TRIES]: waits until `shoplens serve` (process PID, stderr in LOG) prints
# its address; echoes the base URL without the trailing slash. Fails (status 1, the log on
# stderr) when the server exits or does not come up within TRIES x 0.1 s (default 300).
sl_serve_url() {
  local log=$1 pid=$2 tries=${3:-300} url=""
  for _ in $(seq 1 "$tries"); do
    url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$log" | head -1)
    if [ -n "$url" ]; then echo "${url%/}"; return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "shoplens serve did not come up:" >&2
  cat "$log" >&2
  return 1
}
