#!/usr/bin/env bash
# tests/e2e_cluster.sh - a shoplens cluster on a real PostgreSQL 15 started by the test
# (tests/cluster/pg.sh; stopped at the end whatever happens), from the sample catalog:
#  - the cluster store: init, add (queued, described by 2 workers), info, list, show, export read
#    back into a SQLite store, remove; the same features file as a single-node store of the feed;
#  - distributed ingest: a worker killed with SIGKILL in the middle of a job loses nothing (the
#    job goes back to the queue) and nothing is done twice (one log entry, one set of images per
#    product; image ids as a single-node ingest numbers them);
#  - search results through the cluster store equal a single-node store's, query by query.
set -euo pipefail
BIN=${SHOPLENS_BIN:-build/shoplens}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
work=$(mktemp -d "${TMPDIR:-/tmp}/sl-e2e-cluster.XXXXXX")
. "${SL_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/tests/cluster/lib.sh"
trap 'cl_cleanup; rm -rf "$work"' EXIT
fail() {
  echo "e2e_cluster: FAIL: $*" >&2
  for f in "$work"/*.log; do [ -s "$f" ] && { echo "--- $f" >&2; tail -15 "$f" >&2; }; done
  exit 1
}
say() { echo "e2e_cluster: $*"; }

cl_pg_start || fail "PostgreSQL did not start"
say "PostgreSQL at $PGURL"

# The catalog: 24 products, 2 catalog views each, 1 shopper photo each.
"$BIN" sample catalog "$work/cat" --products 24 --views 2 --photos 1 --size 320 --seed 16 --quiet
# single-node reference store
"$BIN" add "$work/cat/catalog.csv" --store "$work/single" --quiet

# ---- the cluster store -------------------------------------------------------------------------
"$BIN" init --store "$PGURL" --json > "$work/init.json"
[ "$(cl_json "$work/init.json" 'd["products"]')" = 0 ] || fail "init: $(cat "$work/init.json")"
"$BIN" init --store "$PGURL" --quiet || fail "init of an existing cluster store must open it"
set +e; "$BIN" init --store "$PGURL" --features color >"$work/o" 2>"$work/e"; rc=$?; set -e
[ $rc = 1 ] && grep -q "fixed" "$work/e" || fail "other features on an existing cluster store: rc $rc $(cat "$work/e")"
set +e; "$BIN" worker --store "$work/single" >"$work/o" 2>"$work/e"; rc=$?; set -e
[ $rc = 2 ] && grep -q "cluster store" "$work/e" || fail "worker on a SQLite store: rc $rc"

# ---- distributed ingest; a worker killed in the middle of a job ---------------------------------
cl_bg wA "$BIN" worker --store "$PGURL" --name wA; pidA=$CL_PID
cl_bg wB "$BIN" worker --store "$PGURL" --name wB
cl_bg add "$BIN" add "$work/cat/catalog.csv" --store "$PGURL" --json; pid_add=$CL_PID
# wA holds a job from its claim to its commit; its attempt row says which (tests/cluster/lib.sh)
a_busy() { [ -n "$(cl_sql "SELECT job_id FROM shoplens.job_attempts WHERE worker = 'wA' LIMIT 1")" ]; }
killed_job=""
for try in 1 2 3; do
  cl_poll 300 a_busy || fail "worker wA never took a job"
  kill -KILL "$pidA"
  wait "$pidA" 2>/dev/null || true
  killed_job=$(cl_sql "SELECT job_id FROM shoplens.job_attempts WHERE worker = 'wA' LIMIT 1")
  [ -n "$killed_job" ] && break
  # wA finished that job between the look and the kill: start it again and retry
  cl_bg wA "$BIN" worker --store "$PGURL" --name wA; pidA=$CL_PID
done
[ -n "$killed_job" ] || fail "could not kill wA in the middle of a job"
say "killed worker wA in the middle of job $killed_job"
wait "$pid_add" || fail "add exited $?: $(cat "$work/add.log")"
[ "$(cl_json "$work/add.out" 'd["added"], d["failed"], d["images_extracted"]')" = "(24, 0, 48)" ] ||
  fail "add through the workers: $(cat "$work/add.out")"
# the killed job was done (by wB), once
[ "$(cl_sql "SELECT state FROM shoplens.jobs WHERE id = $killed_job")" = 1 ] || fail "job $killed_job was lost"
[ "$(cl_sql "SELECT count(*) FROM shoplens.jobs WHERE state <> 1")" = 0 ] || fail "jobs not done"
[ "$(cl_sql "SELECT count(*) FROM (SELECT product_id FROM shoplens.log WHERE kind = 1 GROUP BY product_id HAVING count(*) > 1) t")" = 0 ] ||
  fail "a product was committed twice"
[ "$(cl_sql "SELECT count(*) FROM shoplens.images")" = 48 ] || fail "images: $(cl_sql "SELECT count(*) FROM shoplens.images")"
# same ids as the single-node ingest of the feed, same features file
sqlite3 "$work/single/catalog.sqlite" "SELECT id, product_id, hash FROM images ORDER BY id" > "$work/ids.single"
cl_sql "SELECT id || '|' || product_id || '|' || hash FROM shoplens.images ORDER BY id" > "$work/ids.cluster"
diff "$work/ids.single" "$work/ids.cluster" >/dev/null || fail "image ids differ from the single-node store"
cl_pg psql -At -c "SELECT encode(data, 'base64') FROM shoplens.files WHERE name = 'features-1.bin'" | base64 -d > "$work/features.cluster"
cmp -s "$work/features.cluster" "$work/single/features-1.bin" || fail "the cluster trained another features file"

# ---- the catalog commands on the cluster store ---------------------------------------------------
"$BIN" info --store "$PGURL" --json > "$work/info.json"
[ "$(cl_json "$work/info.json" 'd["products"], d["images"], d["cluster"]["jobs"]["queued"], d["cluster"]["jobs"]["done"]')" = "(24, 48, 0, 24)" ] ||
  fail "info: $(cat "$work/info.json")"
[ "$(cl_json "$work/info.json" 'sorted(n["name"] for n in d["cluster"]["nodes"] if n["role"] == "worker")')" = "['wA', 'wB']" ] ||
  fail "info nodes: $(cat "$work/info.json")"
"$BIN" show P000005 --store "$PGURL" --json > "$work/show.json"
"$BIN" show P000005 --store "$work/single" --json > "$work/show1.json"
[ "$(cl_json "$work/show.json" '[i["sha256"] for i in d["images"]], d["title"]')" = "$(cl_json "$work/show1.json" '[i["sha256"] for i in d["images"]], d["title"]')" ] ||
  fail "show differs"
mkdir "$work/exp"
"$BIN" export --store "$PGURL" --out "$work/exp/feed.csv" --quiet
"$BIN" add "$work/exp/feed.csv" --store "$work/reimport" --json > "$work/re.json"
[ "$(cl_json "$work/re.json" 'd["added"], d["failed"]')" = "(24, 0)" ] || fail "export read back: $(cat "$work/re.json")"

# ---- search through the cluster store = single node -------------------------------------------------
for q in "$work"/cat/queries/*/0.jpg; do
  "$BIN" search "$q" --store "$work/single" -k 5 --json > "$work/s1.json"
  "$BIN" search "$q" --store "$PGURL" -k 5 --json > "$work/s2.json"
  cmp -s "$work/s1.json" "$work/s2.json" || fail "search $q: cluster store answers differ: $(diff "$work/s1.json" "$work/s2.json" | head)"
done
say "searches through the cluster store equal the single-node store's"

"$BIN" remove P000023 --store "$PGURL" --quiet
[ "$(cl_sql "SELECT count(*) FROM shoplens.products")" = 23 ] || fail "remove"
"$BIN" verify --store "$PGURL" --quiet || fail "verify of the cluster store"

say "ok"
