#!/usr/bin/env bash
# tests/e2e_serve_refresh.sh - a running `shoplens serve` picks up products that another process
# (`shoplens add`, `shoplens remove`) commits to its store, without a restart.
set -euo pipefail

BIN=${SHOPLENS_BIN:-build/shoplens}
SRC=${SL_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
. "$SRC/tests/server/lib.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/sl-e2e-refresh.XXXXXX")
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "e2e_serve_refresh: FAIL: $*" >&2; tail -20 "$work/server.log" >&2 || true; exit 1; }

"$BIN" sample catalog "$work/cat" --products 8 --views 1 --photos 1 --size 256 --seed 11 >/dev/null
# The first half of the feed goes in before the server starts, the second half while it runs.
head -5 "$work/cat/catalog.csv" > "$work/cat/first.csv"
{ head -1 "$work/cat/catalog.csv"; tail -n +6 "$work/cat/catalog.csv"; } > "$work/cat/second.csv"
last=$(tail -1 "$work/cat/catalog.csv" | cut -d, -f1)
"$BIN" init --store "$work/store" --features color >/dev/null
"$BIN" add "$work/cat/first.csv" --store "$work/store" --quiet >/dev/null

"$BIN" serve --store "$work/store" --listen 127.0.0.1:0 --threads 2 --read-only 2>"$work/server.log" &
pid=$!
URL=$(sl_serve_url "$work/server.log" "$pid") || fail "server did not start"

# poll TRIES CHECK...: runs CHECK every 0.1 s until it succeeds; status 1 after TRIES attempts.
poll() {
  local tries=$1; shift
  for _ in $(seq 1 "$tries"); do "$@" && return 0; sleep 0.1; done
  return 1
}
# in_search K: the new product's shopper photo finds it among the top K (answer kept in search.json)
in_search() {
  curl -s -F "image=@$work/cat/queries/$last/0.jpg" "$URL/v1/search?k=$1" > "$work/search.json"
  grep -q "\"$last\"" "$work/search.json"
}
product_status() { curl -s -o /dev/null -w '%{http_code}' "$URL/v1/products/$last"; }
gone() { ! in_search 8 && [ "$(product_status)" = 404 ]; }

code=$(product_status)
[ "$code" = 404 ] || fail "$last should not exist yet (got $code)"

"$BIN" add "$work/cat/second.csv" --store "$work/store" --quiet >/dev/null
# Product reads go to SQLite and see the commit at once; the index is refreshed by the server's
# periodic check (every 2 s): poll a search with the new product's shopper photo, 15 s at most.
poll 150 in_search 3 || fail "$last added by another process never reached the index: $(cat "$work/search.json")"
code=$(product_status)
[ "$code" = 200 ] || fail "$last not served after the refresh (got $code)"

"$BIN" remove "$last" --store "$work/store" >/dev/null
poll 100 gone || fail "$last removed by another process is still served or found"

kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?; pid=""
[ $rc = 0 ] || fail "serve exited $rc after SIGTERM"
echo "e2e_serve_refresh: ok"
