#!/usr/bin/env bash
# tests/e2e_cluster.sh - a shoplens cluster on a real PostgreSQL 15 started by the test
# (tests/cluster/pg.sh; stopped at the end whatever happens), from the sample catalog:
#  - the cluster store: init, add (queued, described by 2 workers), info, list, show, export read
#    back into a SQLite store, remove; the same features file as a single-node store of the feed;
#  - distributed ingest: a worker killed with SIGKILL in the middle of a job loses nothing (the
#    job goes back to the queue) and nothing is done twice (one log entry, one set of images per
#    product; image ids as a single-node ingest numbers them);
#  - search results through the cluster store equal a single-node store's, query by query.
#  - the schema: version 3 (price indexes, references); a schema-1 store is upgraded by a
#    read-write open;
#  - the first add calibrates the cluster store once its workers are done, and retrain and train
#    on it give the single store's features files; every node and the router load them and
#    answer as the trained single store, confidence included;
#  - references (train's labelled photos): train keeps them on the cluster store, every node
#    copies its shard's, a search of one of the photos finds its product; retrain drops them,
#    removing a product removes its references, in PostgreSQL and in the nodes' copies;
#  - a search whose candidates hold references verifies each candidate once over the cluster
#    (the shards' verifications in /metrics equal the single store's for the same searches);
#  - check and sync on the cluster store answer as on the single store;
#  - a price filter reads products_price (PostgreSQL's auto_explain logs the plans the CLI's
#    statements get, on a products table grown with rows without images).
set -euo pipefail
BIN=${SHOPLENS_BIN:-build/shoplens}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
work=$(mktemp -d "${TMPDIR:-/tmp}/sl-e2e-cluster.XXXXXX")
. "${SL_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/tests/cluster/lib.sh"
trap 'cl_cleanup; rm -rf "$work"' EXIT
trap 'exit 1' INT TERM
if ! cl_pg_available; then
  echo "e2e_cluster: SKIP: no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/pg_ctl); 'bash scripts/deps.sh test' installs postgresql-15"
  exit 77
fi
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
# schema 3; a store of schema 1 (its indexes, tables and version put back) is refused by a
# read-only open, naming the upgrade, and upgraded by a read-write one
indexes() { cl_sql "SELECT string_agg(indexdef, ' | ' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'shoplens' AND indexname IN ('products_price', 'images_product')"; }
schema2="CREATE INDEX images_product ON shoplens.images USING btree (product_id, id) | CREATE INDEX products_price ON shoplens.products USING btree (price, id)"
has_refs() { cl_sql "SELECT to_regclass('shoplens.refs') IS NOT NULL AND to_regclass('shoplens.ref_ids') IS NOT NULL"; }
[ "$(cl_sql "SELECT value FROM shoplens.meta WHERE key = 'schema_version'")" = 3 ] && [ "$(indexes)" = "$schema2" ] &&
  [ "$(has_refs)" = t ] || fail "a new cluster store is not of schema 3: $(indexes)"
cl_sql "SET search_path = shoplens; DROP INDEX products_price; DROP INDEX images_product; DROP TABLE refs;
        DROP SEQUENCE ref_ids; CREATE INDEX images_product ON images(product_id);
        UPDATE meta SET value = '1' WHERE key = 'schema_version'"
set +e; "$BIN" info --store "$PGURL" >"$work/o" 2>"$work/e"; rc=$?; set -e
[ $rc = 1 ] && grep -q "schema 1 must be upgraded to 3" "$work/e" || fail "read-only open of a schema-1 store: rc $rc $(cat "$work/e")"
"$BIN" init --store "$PGURL" --quiet || fail "upgrading a schema-1 store"
[ "$(cl_sql "SELECT value FROM shoplens.meta WHERE key = 'schema_version'")" = 3 ] && [ "$(indexes)" = "$schema2" ] &&
  [ "$(has_refs)" = t ] || fail "a schema-1 store was not upgraded: $(indexes)"
set +e; "$BIN" worker --store "$work/single" >"$work/o" 2>"$work/e"; rc=$?; set -e
[ $rc = 2 ] && grep -q "cluster store" "$work/e" || fail "worker on a SQLite store: rc $rc"

# ---- distributed ingest; a worker killed in the middle of a job ---------------------------------
# add trains the features and queues one job per product before any worker runs
cl_bg add "$BIN" add "$work/cat/catalog.csv" --store "$PGURL" --json; pid_add=$CL_PID
queued() { [ "$(cl_sql "SELECT count(*) FROM shoplens.jobs")" = 24 ]; }
cl_poll 1200 queued || fail "add did not queue 24 jobs: $(cat "$work/add.log")"
# Every product commit updates the change log's head row (docs/cluster.md): a session holding
# that row keeps a worker between its claim and its commit, so wA is caught in the middle of a
# job whatever the machine's speed (looking for a busy worker raced jobs of 20-100 ms).
mkfifo "$work/hold"
cl_bg hold bash -c 'exec "$@" < "$0"' "$work/hold" bash "$CL_SRC/tests/cluster/pg.sh" psql "$CL_PGDIR" \
  -v ON_ERROR_STOP=1
pid_hold=$CL_PID
exec 9> "$work/hold"
printf 'BEGIN;\nSELECT seq FROM shoplens.log_head FOR UPDATE;\n\\! touch %s/held\n' "$work" >&9
cl_poll 600 test -f "$work/held" || fail "could not hold the log head: $(cat "$work/hold.log")"
cl_bg wA "$BIN" worker --store "$PGURL" --name wA; pidA=$CL_PID
# wA holds a job from its claim to its commit; its attempt row says which (tests/cluster/lib.sh)
a_busy() { [ -n "$(cl_sql "SELECT job_id FROM shoplens.job_attempts WHERE worker = 'wA' LIMIT 1")" ]; }
cl_poll 600 a_busy || fail "worker wA never took a job: $(cat "$work/wA.log")"
kill -KILL "$pidA"
wait "$pidA" 2>/dev/null || true
killed_job=$(cl_sql "SELECT job_id FROM shoplens.job_attempts WHERE worker = 'wA' LIMIT 1")
[ -n "$killed_job" ] || fail "could not kill wA in the middle of a job"
printf 'COMMIT;\n' >&9
exec 9>&-   # before any other process starts: one inheriting it would keep psql from its EOF
wait "$pid_hold" || fail "the session holding the log head failed: $(cat "$work/hold.log")"
# wB does the rest, the killed job included
cl_bg wB "$BIN" worker --store "$PGURL" --name wB; pidB=$CL_PID
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
# the same learned sections (features-1.bin; the single store's first add then calibrated its
# confidence from the catalog: features-2.bin, section CALB)
python3 - "$work/features.cluster" "$work"/single/features-*.bin <<'PY' || fail "the cluster trained another features file"
import struct, sys
def sections(path):
    d = open(path, "rb").read()
    assert d[:8] == b"SLFEAT\r\n", path
    o, out = 16, {}
    while o < len(d):
        tag, n = d[o:o + 4].decode(), struct.unpack_from("<Q", d, o + 4)[0]
        out[tag] = d[o + 12:o + 12 + n]
        o += 12 + n + 4
    return struct.unpack_from("<I", d, 8)[0], out
(vc, c), (vs, s) = sections(sys.argv[1]), sections(sys.argv[2])
learned = lambda x: {k: v for k, v in x.items() if k != "CALB"}
if vc != 1 or "CALB" in c or "CALB" not in s or learned(c) != learned(s):
    print("cluster", vc, sorted(c), "single", vs, sorted(s)); sys.exit(1)
PY
# the cluster's first add did the same once its workers were done: byte for byte
[ "$(cl_json "$work/add.out" 'd["calibrated"]')" = True ] || fail "the first add did not calibrate: $(cat "$work/add.out")"
cluster_features() {
  cl_pg psql -At -c "SELECT encode(data, 'base64') FROM shoplens.files WHERE name = 'features-$1.bin'" | base64 -d > "$work/features.cluster"
  cmp -s "$work/features.cluster" "$work/single/features-$1.bin"
}
cluster_features 2 || fail "the cluster's calibration at its first add differs from the single store's"

# sync with a feed without P000004: the same report on both stores (P000004 removed, nothing queued)
grep -v '^P000004,' "$work/cat/catalog.csv" > "$work/cat/sync.csv"
"$BIN" sync "$work/cat/sync.csv" --store "$work/single" --json > "$work/sync1.json" || fail "sync of the single store"
"$BIN" sync "$work/cat/sync.csv" --store "$PGURL" --json > "$work/sync2.json" || fail "sync on the cluster store: $(cat "$work/sync2.json")"
rsync_of() { cl_json "$1" 'd["removed_ids"], d["skipped"], d["added"], d["updated"], d["failed"], d.get("queued", 0)'; }
[ "$(rsync_of "$work/sync2.json")" = "(['P000004'], 23, 0, 0, 0, 0)" ] && [ "$(rsync_of "$work/sync1.json")" = "$(rsync_of "$work/sync2.json")" ] ||
  fail "sync on the cluster store: $(cat "$work/sync2.json")"

# retrain learns the features again from the store's copies (the catalog without P000004 now:
# other features than the first add's), re-describes every image (on a cluster: in one
# transaction holding the features version row) and calibrates: the single store's files again
# (features-3.bin retrained, features-4.bin calibrated).
# A product queued while the cluster retrains is described with the new features: the worker
# waits for the features version row the retrain holds, then loads the new features. The log
# head held by a session of the test stops the retrain at its commit (that row lock held) while
# worker wB takes the job; the product (LATE1, P000023's image) then answers a search as on the
# single store where it was added after the retrain.
queue_empty() { [ "$(cl_sql "SELECT count(*) FROM shoplens.jobs WHERE state = 0")" = 0 ]; }
head -1 "$work/cat/catalog.csv" > "$work/cat/late.csv"
grep '^P000023,' "$work/cat/catalog.csv" | sed 's/^P000023,/LATE1,/' >> "$work/cat/late.csv"
"$BIN" retrain --store "$work/single" --quiet || fail "retrain of the single store"
"$BIN" add "$work/cat/late.csv" --store "$work/single" --quiet
# references planted in the cluster store (two products' image vectors) are dropped by the retrain
cl_sql "INSERT INTO shoplens.refs(product_id, vec) SELECT product_id, vec FROM shoplens.images ORDER BY id LIMIT 2"
rm -f "$work/held"
cl_bg hold2 bash -c 'exec "$@" < "$0"' "$work/hold" bash "$CL_SRC/tests/cluster/pg.sh" psql "$CL_PGDIR" -v ON_ERROR_STOP=1
pid_hold=$CL_PID
exec 9> "$work/hold"
printf 'BEGIN;\nSELECT seq FROM shoplens.log_head FOR UPDATE;\n\\! touch %s/held\n' "$work" >&9
cl_poll 600 test -f "$work/held" || fail "could not hold the log head: $(cat "$work/hold2.log")"
cl_bg retrain "$BIN" retrain --store "$PGURL" --json 9>&-; pid_rt=$CL_PID
waits_for() { [ "$(cl_sql "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '$1'")" -ge 1 ]; }
cl_poll 1200 waits_for '%UPDATE log_head%' || fail "the retrain did not reach its commit: $(cat "$work/retrain.log")"
"$BIN" add "$work/cat/late.csv" --store "$PGURL" --no-wait --quiet 9>&-
cl_poll 300 waits_for '%features_version%FOR SHARE%' || fail "worker wB did not wait for the retrain: $(tail -3 "$work/wB.log")"
printf 'COMMIT;\n' >&9
exec 9>&-
wait "$pid_hold" || fail "the session holding the log head failed: $(cat "$work/hold2.log")"
wait "$pid_rt" || fail "retrain on the cluster store: $(cat "$work/retrain.log")"
[ "$(cl_json "$work/retrain.out" 'd["images"] in (46, 48)')" = True ] || fail "retrain on the cluster store: $(cat "$work/retrain.out")"
[ "$(cl_sql "SELECT count(*) FROM shoplens.refs")" = 0 ] || fail "the retrain kept the cluster store's references"
cl_poll 300 queue_empty || fail "LATE1 was not processed"
[ "$(cl_sql "SELECT value FROM shoplens.meta WHERE key = 'features_version'")" = 4 ] && cluster_features 4 ||
  fail "the cluster retrained other features than the single store"
"$BIN" search "$work/cat/images/P000023_0.jpg" --store "$work/single" -k 3 --json > "$work/s1.json"
"$BIN" search "$work/cat/images/P000023_0.jpg" --store "$PGURL" -k 3 --json > "$work/s2.json" 2> "$work/e" ||
  fail "search on the cluster store after the retrain: $(cat "$work/e")"
grep -q '"LATE1"' "$work/s2.json" && cmp -s "$work/s1.json" "$work/s2.json" ||
  fail "LATE1, queued during the retrain, was described with other features: $(diff "$work/s1.json" "$work/s2.json" | head)"

# a row whose image does not decode is reported by the worker, through add, as on a single node;
# --no-wait leaves the products to the workers
echo "not an image" > "$work/cat/images/broken.jpg"
printf 'product_id,image,title\nBROKEN,images/broken.jpg,broken\n' > "$work/cat/broken.csv"
set +e; "$BIN" add "$work/cat/broken.csv" --store "$PGURL" --json > "$work/broken.json"; rc=$?; set -e
[ $rc = 3 ] || fail "add of a broken image exited $rc: $(cat "$work/broken.json")"
[ "$(cl_json "$work/broken.json" 'd["added"], d["failed"], d["failures"][0]["row"], d["failures"][0]["status"], d["failures"][0]["file"].endswith("broken.jpg")')" = "(0, 1, 1, 'SL_E_UNSUPPORTED', True)" ] ||
  fail "the worker's failure report: $(cat "$work/broken.json")"
set +e; "$BIN" add "$work/cat/broken.csv" --store "$work/single" --no-wait >"$work/o" 2>"$work/e"; rc=$?; set -e
[ $rc = 2 ] && grep -q "cluster store" "$work/e" || fail "--no-wait on a SQLite store: rc $rc $(cat "$work/e")"
"$BIN" add "$work/cat/broken.csv" --store "$PGURL" --no-wait --json > "$work/nowait.json" || true
[ "$(cl_json "$work/nowait.json" 'd["queued"], d["added"]')" = "(1, 0)" ] || fail "--no-wait: $(cat "$work/nowait.json")"
cl_poll 300 queue_empty || fail "the queued job was not processed"
[ "$(cl_sql "SELECT count(*) FROM shoplens.products WHERE id = 'BROKEN'")" = 0 ] || fail "a product with a broken image was added"

# ---- the catalog commands on the cluster store ---------------------------------------------------
"$BIN" info --store "$PGURL" --json > "$work/info.json"
[ "$(cl_json "$work/info.json" 'd["products"], d["images"], d["cluster"]["jobs"]["queued"], d["cluster"]["jobs"]["done"]')" = "(24, 48, 0, 25)" ] ||
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

# query_photos DIR: DIR's query photos (one per product) - every one in the release build, every
# third under the sanitizers (SL_SANITIZED: the same code paths, and there every CLI search is a
# process start under ASan; the whole list made this test 760 of the sanitized suite's 790 s)
query_photos() {
  local i=0 q
  for q in "$1"/queries/*/0.jpg; do
    if [ -z "${SL_SANITIZED:-}" ] || [ $((i % 3)) = 0 ]; then echo "$q"; fi
    i=$((i + 1))
  done
}

# ---- search through the cluster store = single node -------------------------------------------------
# (confidence and match included: both stores carry the same calibration)
for q in $(query_photos "$work/cat"); do
  "$BIN" search "$q" --store "$work/single" -k 5 --json > "$work/s1.json"
  "$BIN" search "$q" --store "$PGURL" -k 5 --json > "$work/s2.json"
  [ "$(grep -c '"confidence":' "$work/s2.json")" = 5 ] || fail "search $q: cluster results without a confidence"
  cmp -s "$work/s1.json" "$work/s2.json" || fail "search $q: cluster store answers differ: $(diff "$work/s1.json" "$work/s2.json" | head)"
done
say "searches through the cluster store equal the single-node store's"
# check: a photo against another product (a "no" only the nearest other products decide), and
# every query photo against its product: the single store's answers
"$BIN" check P000010 "$work/cat/queries/P000003/0.jpg" --store "$work/single" --json > "$work/c1.json" || true
"$BIN" check P000010 "$work/cat/queries/P000003/0.jpg" --store "$PGURL" --json > "$work/c2.json" || true
[ "$(cl_json "$work/c1.json" 'd["match"]')" = False ] && cmp -s "$work/c1.json" "$work/c2.json" ||
  fail "check on the cluster store: $(cat "$work/c2.json"), single: $(cat "$work/c1.json")"
# (every photo: in the release build only, the same code path as one check under the sanitizers)
if [ -z "${SL_SANITIZED:-}" ]; then
  "$BIN" check --photos "$work/cat/queries" --store "$work/single" --json > "$work/c1.json" || true
  "$BIN" check --photos "$work/cat/queries" --store "$PGURL" --json > "$work/c2.json" || true
  [ "$(cl_json "$work/c2.json" 'd["accepted"] + d["rejected"], d["failed"]')" = "(23, 1)" ] && cmp -s "$work/c1.json" "$work/c2.json" ||
    fail "check --photos on the cluster store: $(diff "$work/c1.json" "$work/c2.json" | head)"
fi

"$BIN" verify --store "$PGURL" --quiet || fail "verify of the cluster store"

# ---- 3 shards x 2 replicas and a router ------------------------------------------------------------
. "$CL_SRC/tests/server/lib.sh"
declare -A NURL NPID
start_node() { # start_node NAME serve-options...
  local nm=$1; shift
  cl_bg "$nm" "$BIN" serve --store "$PGURL" --name "$nm" --listen 127.0.0.1:0 --threads 2 "$@"
  NPID[$nm]=$CL_PID
}
node_url() { NURL[$1]=$(sl_serve_url "$work/$1.log" "${NPID[$1]}") || fail "node $1 did not start"; }
NODES="s0r0 s0r1 s1r0 s1r1 s2r0 s2r1"
for nm in $NODES; do start_node "$nm" --shard "${nm:1:1}/3" --data "$work/data/$nm"; done
start_node router --router
for nm in $NODES router; do node_url "$nm"; done
# caught_up [N]: N search nodes alive (default 6), every one at the log head
caught_up() {
  "$BIN" info --store "$PGURL" --json > "$work/ci.json" 2>/dev/null || return 1
  python3 - "$work/ci.json" "${1:-6}" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["cluster"]
s = [n for n in d["nodes"] if n["role"] == "search" and n["alive"]]
sys.exit(0 if len(s) == int(sys.argv[2]) and all(n["log_pos"] == d["log_head"] for n in s) else 1)
PY
}
cl_poll 300 caught_up || fail "the search nodes did not come up to the log head: $(cat "$work/ci.json")"
# not_partial URL: a search through URL is answered by every shard. A node or router refreshes
# its list of live replicas from the heartbeats once a second, so it may answer "partial" for
# that long after the nodes came up (never a silently short list).
not_partial() {
  curl -s -F "image=@$work/cat/queries/P000011/0.jpg" "$1/v1/search?k=3" > "$work/np.json" &&
    [ "$(cl_json "$work/np.json" 'd.get("partial")')" = False ]
}
for nm in router s0r0 s1r1 s2r0; do
  cl_poll 50 not_partial "${NURL[$nm]}" || fail "$nm does not see every shard: $(cat "$work/np.json")"
done
say "6 search nodes and a router are up"

# same SIG: the product ids, image ids, inliers and matches of two answers (CLI or API JSON) agree,
# and their scores and confidences to 2e-6 (two units of the 6 decimals printed). Not to the last
# digit: a trained store applies its head in float32 through OpenBLAS, whose kernel may differ with
# the call's shape and threads (a CLI search, a node's), so scores may differ by ~1e-9 - and a
# score that close to a rounding boundary prints one unit apart (seen: 0.0706875000 / 0.0706874981).
same_results() {
  python3 - "$1" "$2" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
key = lambda d: [(r["product_id"], r["image_id"], r["inliers"], r["match"]) for r in d["results"]]
num = lambda d: [(r["score"], r["confidence"]) for r in d["results"]]
if key(a) != key(b) or any(abs(x - y) > 2e-6 for p, q in zip(num(a), num(b)) for x, y in zip(p, q)):
    print("single:", key(a), num(a)); print("cluster:", key(b), num(b), "partial:", b.get("partial"), b.get("missing_shards")); sys.exit(1)
if b.get("partial", False):
    print("partial answer:", b); sys.exit(1)
if not all(0 <= r["confidence"] <= 1 and isinstance(r["match"], bool) for r in b["results"]):
    print("cluster results without a confidence:", b); sys.exit(1)
PY
}
urls=(${NURL[router]} ${NURL[s0r0]} ${NURL[s1r1]} ${NURL[s2r0]})
# every_query_same WHAT: each query photo, through the router and nodes in turn, answers as the
# single store does
every_query_same() {
  local i=0 q u
  for q in $(query_photos "$work/cat"); do
    u=${urls[$((i % ${#urls[@]}))]}; i=$((i + 1))
    "$BIN" search "$q" --store "$work/single" -k 5 --json > "$work/s1.json"
    curl -s -F "image=@$q" "$u/v1/search?k=5" > "$work/s2.json"
    same_results "$work/s1.json" "$work/s2.json" || fail "search $q on $u differs from the $1 single-node store"
  done
}
every_query_same untrained
q=$work/cat/queries/P000007/0.jpg
"$BIN" search "$q" --store "$work/single" -k 3 --offset 2 --category "$(cl_json "$work/show1.json" 'd["category"]')" --json > "$work/s1.json"
curl -s -F "image=@$q" "${NURL[router]}/v1/search?k=3&offset=2&category=$(cl_json "$work/show1.json" 'd["category"]')" > "$work/s2.json"
same_results "$work/s1.json" "$work/s2.json" || fail "filtered page differs"
"$BIN" similar P000005 --store "$work/single" -k 5 --json > "$work/s1.json"
curl -s "${NURL[s1r0]}/v1/products/P000005/similar?k=5" > "$work/s2.json"
same_results "$work/s1.json" "$work/s2.json" || fail "similar differs"
"$BIN" classify "$q" --store "$work/single" --json > "$work/c1.json"
curl -s -F "image=@$q" "${NURL[s2r1]}/v1/classify" > "$work/c2.json"
[ "$(cl_json "$work/c1.json" 'd["category"]')" = "$(cl_json "$work/c2.json" 'd["category"]')" ] &&
  python3 -c 'import json,sys; a,b=(json.load(open(f))["confidence"] for f in sys.argv[1:3]); sys.exit(abs(a-b) > 2e-6)' \
    "$work/c1.json" "$work/c2.json" ||
  fail "classify differs: $(cat "$work/c1.json") / $(cat "$work/c2.json")"
say "searches, a filtered page, similar and classify equal the single-node store's on every node"

# ---- train a head on the cluster store: every node loads the new features --------------------------
# the same photos, seed and epochs train the same head (and calibration) on both stores and keep
# them as references of their products; the log's features entry makes each node copy the
# cluster's new features and its shard's references, then they answer as the trained single store
# does, confidence included
# (3 photos of each product: calibrating needs at least 50 wrong products in the result lists)
"$BIN" sample catalog "$work/tp" --products 24 --views 1 --photos 3 --size 320 --seed 17 --quiet
rm -r "$work/tp/queries/P000004" # synced away above
topt=(--photos "$work/tp/queries" --epochs 4 --seed 3 --train-opt lambda=0.01)
"$BIN" train --store "$work/single" "${topt[@]}" --quiet >/dev/null || fail "train of the single store"
"$BIN" train --store "$PGURL" "${topt[@]}" --json > "$work/t.json" || fail "train on the cluster store: $(cat "$work/t.json")"
[ "$(cl_json "$work/t.json" 'd["photos"], d["products"], d["features_version"], d["calibration"]["source"], d["references"]')" = "(69, 23, 5, 'photos', 69)" ] ||
  fail "train on the cluster store: $(cat "$work/t.json")"
[ "$(cl_sql "SELECT count(*) || ' ' || count(DISTINCT product_id) || ' ' || min(length(vec)) FROM shoplens.refs")" = \
  "$(sqlite3 "$work/single/catalog.sqlite" "SELECT count(*) || ' ' || count(DISTINCT product_id) || ' ' || min(length(vec)) FROM refs")" ] ||
  fail "the cluster store's references differ from the single store's: $(cl_sql "SELECT count(*) FROM shoplens.refs")"
cluster_features 5 || fail "the cluster trained another head than the single store"
# a training photo, through the cluster store itself (one engine, as a single store): its product
ph=$work/tp/queries/P000013/0.jpg
"$BIN" search "$ph" --store "$work/single" -k 5 --json > "$work/s1.json"
"$BIN" search "$ph" --store "$PGURL" -k 5 --json > "$work/s2.json"
[ "$(cl_json "$work/s2.json" 'd["results"][0]["product_id"]')" = P000013 ] && cmp -s "$work/s1.json" "$work/s2.json" ||
  fail "a reference photo through the cluster store: $(diff "$work/s1.json" "$work/s2.json" | head)"
cl_poll 300 caught_up || fail "the search nodes did not load the trained features: $(cat "$work/ci.json")"
# every node's copy holds its shard's references: each replica pair agrees, the shards add up
copy_refs() { sqlite3 "$work/data/$1/catalog.sqlite" "SELECT count(*) FROM refs"; }
[ "$(copy_refs s0r0)" = "$(copy_refs s0r1)" ] && [ "$(copy_refs s1r0)" = "$(copy_refs s1r1)" ] &&
  [ "$(copy_refs s2r0)" = "$(copy_refs s2r1)" ] && [ "$(( $(copy_refs s0r0) + $(copy_refs s1r0) + $(copy_refs s2r0) ))" = 69 ] ||
  fail "the nodes' copies hold other references: $(copy_refs s0r0) $(copy_refs s1r0) $(copy_refs s2r0)"
for nm in router s0r0 s1r1 s2r0; do
  cl_poll 50 not_partial "${NURL[$nm]}" || fail "$nm does not see every shard after training: $(cat "$work/np.json")"
done
every_query_same trained
curl -s -F "image=@$ph" "${NURL[router]}/v1/search?k=3" > "$work/s.json"
[ "$(cl_json "$work/s.json" 'd["results"][0]["product_id"], d["partial"]')" = "('P000013', False)" ] ||
  fail "a reference photo through the router: $(cat "$work/s.json")"
say "a head trained on the cluster store reaches every node with its references: answers equal the trained single-node store's"

# every candidate is verified once: a search through the router whose merged candidates hold
# references makes the shards verify (RANSAC) exactly what the single store verifies for it -
# the fold's two steps (parts, then the folded re-rank) must not verify twice. Counted by
# shoplens_verifications_total of /metrics, summed over every node (and a server of the single
# store), over every query photo of the trained catalog (references among the candidates)
cl_bg single "$BIN" serve --store "$work/single" --listen 127.0.0.1:0 --threads 2; single_pid=$CL_PID
single_url=$(sl_serve_url "$work/single.log" "$single_pid") || fail "a server of the single store did not start"
verifications() { # verifications URL...: the sum of their shoplens_verifications_total
  local u t=0 v
  for u in "$@"; do
    v=$(curl -s "$u/metrics" | awk '$1 == "shoplens_verifications_total" {print $2}')
    [ -n "$v" ] || fail "$u/metrics has no shoplens_verifications_total"
    t=$((t + v))
  done
  echo "$t"
}
all_nodes=(); for nm in $NODES router; do all_nodes+=("${NURL[$nm]}"); done
v_cluster=$(verifications "${all_nodes[@]}"); v_single=$(verifications "$single_url"); nph=0
for q in $(query_photos "$work/tp"); do
  curl -s -F "image=@$q" "${NURL[router]}/v1/search?k=5" > "$work/s2.json"
  curl -s -F "image=@$q" "$single_url/v1/search?k=5" > "$work/s1.json"
  same_results "$work/s1.json" "$work/s2.json" || fail "search $q through the router differs from the single store's server"
  nph=$((nph + 1))
done
v_cluster=$(( $(verifications "${all_nodes[@]}") - v_cluster )); v_single=$(( $(verifications "$single_url") - v_single ))
kill -TERM "$single_pid"; wait "$single_pid" 2>/dev/null || true
say "$nph searches with references: $v_cluster verifications through the router, $v_single on the single store"
[ "$v_single" -gt 0 ] && [ "$v_cluster" = "$v_single" ] ||
  fail "the shards verified $v_cluster candidates for $nph searches the single store answers with $v_single verifications"

# ---- kill -9 of a replica under search load --------------------------------------------------------
python3 "$CL_SRC/tests/cluster/load.py" --urls "${NURL[router]},${NURL[s0r0]},${NURL[s2r1]}" --images "$work/cat/queries" \
  --seconds 9 --threads 3 --out "$work/load1.jsonl" > "$work/load1.out" &
load_pid=$!
sleep 3
kill -KILL "${NPID[s1r0]}"; t_kill=$(date +%s.%N)
wait "$load_pid" || fail "the load generator failed"
python3 - "$work/load1.jsonl" "$t_kill" <<'PY' || fail "searches while a replica was killed: see above"
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
t = float(sys.argv[2])
bad = [r for r in rs if r["status"] != 200 or r["partial"]]
late = [r for r in bad if r["t"] > t + 2.0]
print("e2e_cluster: %d searches under load, %d during the switch failed or were partial, %d after" % (len(rs), len(bad), len(late)))
for r in bad[:5]: print("  ", r)
before = [r for r in rs if r["t"] < t]
sys.exit(0 if len(rs) >= 10 and before and len(bad) <= 3 and not late and any(r["t"] > t + 2.0 for r in rs) else 1)
PY

# ---- a node restarted after writes catches up from its copy --------------------------------------
kill -KILL "${NPID[s2r1]}"
wait "${NPID[s2r1]}" 2>/dev/null || true
shard_of() { python3 -c 'import sys
h = 1469598103934665603
for c in sys.argv[1].encode(): h = ((h ^ c) * 1099511628211) & (2**64 - 1)
print((h >> 33) % int(sys.argv[2]))' "$1" 3; }
new=""
for n in $(seq 1 40); do id="NEW$n"; [ "$(shard_of "$id")" = 2 ] && { new=$id; break; }; done
[ -n "$new" ] || fail "no id of shard 2"
gone=""
for id in P000020 P000021 P000022 P000023 P000019 P000018; do [ "$(shard_of "$id")" = 2 ] && { gone=$id; break; }; done
[ -n "$gone" ] || fail "no catalog product of shard 2"
code=$(curl -s -o "$work/put.json" -w '%{http_code}' -X PUT -F 'metadata={"title":"A new cap","category":"caps"}' \
  -F "image=@$work/cat/queries/P000011/0.jpg" "${NURL[router]}/v1/products/$new")
[ "$code" = 201 ] || [ "$code" = 200 ] || fail "PUT $new: $code $(cat "$work/put.json")"
[ "$(cl_sql "SELECT count(*) FROM shoplens.refs WHERE product_id = '$gone'")" = 3 ] || fail "$gone has no references"
refs_before=$(copy_refs s2r1)
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "${NURL[s0r1]}/v1/products/$gone")
[ "$code" = 204 ] || [ "$code" = 200 ] || fail "DELETE $gone: $code"
# acknowledged = durable in PostgreSQL before the answer
[ "$(cl_sql "SELECT count(*) FROM shoplens.products WHERE id = '$new'")" = 1 ] || fail "PUT answered before its commit"
[ "$(cl_sql "SELECT count(*) FROM shoplens.refs WHERE product_id = '$gone'")" = 0 ] || fail "the references of $gone were kept"
start_node s2r1 --shard 2/3 --data "$work/data/s2r1"
node_url s2r1
grep -q "catching up" "$work/s2r1.log" && ! grep -q "copied" "$work/s2r1.log" ||
  fail "the restarted node did not go on from its copy: $(cat "$work/s2r1.log")"
cl_poll 300 caught_up 5 || fail "the restarted node did not catch up: $(cat "$work/ci.json")"
# shard 2 is now served by the restarted node alone
kill -KILL "${NPID[s2r0]}"
cl_poll 50 not_partial "${NURL[router]}" || fail "the router did not find the restarted replica: $(cat "$work/np.json")"
curl -s -F "image=@$work/cat/queries/P000011/0.jpg" "${NURL[router]}/v1/search?k=3" > "$work/s.json"
[ "$(cl_json "$work/s.json" 'd["results"][0]["product_id"], d["partial"]')" = "('$new', False)" ] ||
  fail "the write did not reach the restarted replica: $(cat "$work/s.json")"
curl -s -F "image=@$work/cat/queries/$gone/0.jpg" "${NURL[router]}/v1/search?k=24" > "$work/s.json"
[ "$(cl_json "$work/s.json" '"'"$gone"'" in [r["product_id"] for r in d["results"]]')" = False ] || fail "$gone is still found"
# its references left the restarted node's copy (and index) with it; the others stayed
[ "$(sqlite3 "$work/data/s2r1/catalog.sqlite" "SELECT count(*) FROM refs WHERE product_id = '$gone'")" = 0 ] &&
  [ "$(copy_refs s2r1)" = "$((refs_before - 3))" ] && [ "$(copy_refs s2r0)" = "$((refs_before - 3))" ] ||
  fail "the nodes of shard 2 kept the references of $gone: $(copy_refs s2r1) $(copy_refs s2r0), $refs_before before"
say "a replica restarted after writes caught up from its copy ($new added, $gone removed)"

# ---- every replica of shard 2 down: a partial answer naming it, never a silently short list ---------
kill -KILL "${NPID[s2r1]}"
wait "${NPID[s2r1]}" 2>/dev/null || true
: > "$work/responses.tsv"
for u in "${NURL[router]}" "${NURL[s0r1]}"; do
  code=$(curl -s -o "$work/partial.json" -w '%{http_code}\t%{content_type}' -F "image=@$work/cat/queries/P000011/0.jpg" "$u/v1/search?k=24")
  printf 'POST\t/v1/search?k=24\t%s\t%s\t%s\n' "${code%%$'\t'*}" "${code#*$'\t'}" "$work/partial.json" >> "$work/responses.tsv"
  [ "${code%%$'\t'*}" = 200 ] || fail "search with shard 2 down on $u: $code $(cat "$work/partial.json")"
  python3 - "$work/partial.json" <<'PY' || fail "the answer with shard 2 down on $u: $(cat "$work/partial.json")"
import json, sys
d = json.load(open(sys.argv[1]))
def shard(i):
    h = 1469598103934665603
    for c in i.encode(): h = ((h ^ c) * 1099511628211) & (2**64 - 1)
    return (h >> 33) % 3
ids = [r["product_id"] for r in d["results"]]
scores = [r["score"] for r in d["results"]]
ok = (d.get("partial") is True and d.get("missing_shards") == [2] and len(ids) >= 2 and
      all(shard(i) != 2 for i in ids) and scores == sorted(scores, reverse=True))
sys.exit(0 if ok else 1)
PY
done
/usr/bin/python3 "$CL_SRC/tests/server/openapi_check.py" "$CL_SRC/docs/openapi.yaml" "$work/responses.tsv" ||
  fail "partial answers do not match docs/openapi.yaml"
say "shard 2 down: partial answers naming shard 2, the other shards' products ranked"
start_node s1r0 --shard 1/3 --data "$work/data/s1r0"
start_node s2r0 --shard 2/3 --data "$work/data/s2r0"
start_node s2r1 --shard 2/3 --data "$work/data/s2r1"
node_url s1r0
node_url s2r0
node_url s2r1
cl_poll 300 caught_up || fail "the nodes did not come back: $(cat "$work/ci.json")"
cl_poll 50 not_partial "${NURL[router]}" && cl_poll 50 not_partial "${NURL[s1r1]}" || fail "partial after the nodes came back"

# ---- PostgreSQL restarted: searches go on, nodes and workers reconnect by themselves ----------------
python3 "$CL_SRC/tests/cluster/load.py" --urls "${NURL[router]},${NURL[s1r1]}" --images "$work/cat/queries" \
  --seconds 30 --threads 2 --stop-file "$work/stop" --out "$work/load2.jsonl" > "$work/load2.out" &
load_pid=$!
sleep 1
cl_pg stop
sleep 2
cl_pg start > /dev/null
touch "$work/stop"
wait "$load_pid" || fail "the load generator failed"
python3 - "$work/load2.jsonl" <<'PY' || fail "searches while PostgreSQL restarted"
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
bad = [r for r in rs if r["status"] != 200 or r["partial"]]
print("e2e_cluster: %d searches while PostgreSQL restarted, %d failed" % (len(rs), len(bad)))
for r in bad[:5]: print("  ", r)
sys.exit(0 if len(rs) >= 5 and not bad else 1)
PY
cl_poll 300 caught_up || fail "the nodes did not reconnect: $(cat "$work/ci.json")"
code=$(curl -s -o "$work/put.json" -w '%{http_code}' -X PATCH -H 'Content-Type: application/merge-patch+json' \
  --data '{"title":"After the restart"}' "${NURL[s1r1]}/v1/products/$new")
[ "$code" = 200 ] || fail "PATCH after the restart: $code $(cat "$work/put.json")"
cl_poll 300 caught_up || fail "the PATCH did not reach the nodes"
curl -s -F "image=@$work/cat/queries/P000011/0.jpg" "${NURL[s0r0]}/v1/search?k=1" > "$work/s.json"
[ "$(cl_json "$work/s.json" 'd["results"][0]["title"]')" = "After the restart" ] || fail "PATCH not searched: $(cat "$work/s.json")"
# the worker wB still runs: a feed added after the restart is described by it
head -1 "$work/cat/catalog.csv" > "$work/more.csv"
grep '^P000023,' "$work/cat/catalog.csv" | sed 's/^P000023,/P000099,/' >> "$work/more.csv"
sed -i "s#,images/#,$work/cat/images/#" "$work/more.csv"
"$BIN" add "$work/more.csv" --store "$PGURL" --json > "$work/more.json" || fail "add after the restart: $(cat "$work/more.json")"
[ "$(cl_json "$work/more.json" 'd["added"]')" = 1 ] || fail "add after the restart: $(cat "$work/more.json")"
grep -q "wB P000099 added" "$work/wB.log" || fail "worker wB did not reconnect: $(tail -5 "$work/wB.log")"
say "PostgreSQL restarted: searches answered throughout; nodes and workers reconnected"

# ---- a price filter reads the schema-2 indexes ------------------------------------------------------
# 20,000 more products without images (straight into the table: no log entry, the nodes never
# see them) make the planner choose by cost as in a big catalog; auto_explain logs the plan of
# every statement of the CLI's sessions into the server's log
cl_sql "INSERT INTO shoplens.products(id, title, price, shard_key)
        SELECT 'FILL' || g, 'filler', (g % 10000) / 100.0, 0 FROM generate_series(1, 20000) g"
cl_sql "ANALYZE shoplens.products; ANALYZE shoplens.images"
price=$(cl_json "$work/show1.json" 'd["price"]')
lo=$(python3 -c "print($price - 0.1)"); hi=$(python3 -c "print($price + 0.1)")
PGOPTIONS="-c session_preload_libraries=auto_explain -c auto_explain.log_min_duration=0" \
  "$BIN" search "$work/cat/queries/P000005/0.jpg" --store "$PGURL" --min-price "$lo" --max-price "$hi" --json > "$work/s.json" ||
  fail "a price filter on the cluster store: $(cat "$work/s.json")"
[ "$(cl_json "$work/s.json" 'd["results"][0]["product_id"], all('"$lo"' <= r["price"] <= '"$hi"' for r in d["results"])')" = "('P000005', True)" ] ||
  fail "a price filter on the cluster store: $(cat "$work/s.json")"
grep -A12 "Query Text: SELECT i.id FROM images i JOIN products p" "$CL_PGDIR/server.log" > "$work/plan.txt" || true
grep -q "products_price" "$work/plan.txt" || fail "the price filter did not read products_price: $(head -20 "$work/plan.txt")"
cl_sql "DELETE FROM shoplens.products WHERE id LIKE 'FILL%'"
say "a price filter reads products_price"

# ---- every process stops cleanly on SIGTERM (and, under the sanitizers, without a report) ---------
for nm in $NODES router; do kill -TERM "${NPID[$nm]}"; done
kill -TERM "$pidB"
for nm in $NODES router; do
  rc=0; wait "${NPID[$nm]}" || rc=$?
  [ $rc = 0 ] || fail "node $nm exited $rc on SIGTERM"
done
rc=0; wait "$pidB" || rc=$?
[ $rc = 0 ] || fail "worker wB exited $rc on SIGTERM"
! grep -l -E "Sanitizer|runtime error" "$work"/*.log || fail "sanitizer reports above"

say "ok"
