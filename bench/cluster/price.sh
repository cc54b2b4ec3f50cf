#!/usr/bin/env bash
# bench/cluster/price.sh BUILD_DIR - the price filter of a cluster store on PostgreSQL, with the
# indexes of schema 1 and of schema 2 (covering products_price(price, id) and
# images_product(product_id, id): docs/formats/cluster.md).
#
# A cluster store made by `shoplens init`, filled by SQL (not by ingesting images: the filter reads
# only products and images' ids): SL_BENCH_PRICE_PRODUCTS products (default 100000, prices
# uniform in 0..100, setseed(0.42)), 2 image rows each without vectors (a real store keeps the
# vectors and local features out of line in TOAST, so the images heap rows are small either way),
# then VACUUM ANALYZE. Each filter is the statement sl__pg_filter_images sends (src/catalog/
# store_pg.c; copied here, with parameters bound as libpq does: a custom plan per execution),
# run 7 times with EXPLAIN (ANALYZE): the median execution time and the plan's scan of products.
# Rows: schema 1's statement (ORDER BY i.id) and indexes (images_product(product_id), no price
# index), then schema 2's indexes (products_price(price, id), images_product(product_id, id)) with
# this build's statement (no ORDER BY: the caller sorts) and with the ORDER BY. Prints a markdown section (bench/cluster/run.sh
# appends it to bench/results/cluster.md); SL_BENCH_OUT=FILE writes it there instead.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin="$build/shoplens"
n=${SL_BENCH_PRICE_PRODUCTS:-100000}
work=$(mktemp -d "${TMPDIR:-/tmp}/sl-bench-price.XXXXXX")
. "$root/tests/cluster/lib.sh"
trap 'cl_cleanup; rm -rf "$work"' EXIT
cl_pg_start >/dev/null || { echo "bench/cluster/price: PostgreSQL did not start" >&2; exit 1; }
"$bin" init --store "$PGURL" --quiet
cl_pg psql -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET search_path = shoplens;
SELECT setseed(0.42);
INSERT INTO files(name, size, data) VALUES ('images/bench.jpg', 1, '\x00');
INSERT INTO products(id, title, price, shard_key)
  SELECT 'P' || lpad(g::text, 7, '0'), 'product ' || g, round((random() * 100)::numeric, 2), 0
  FROM generate_series(1, $n) g;
INSERT INTO images(product_id, source, hash, size, file)
  SELECT p.id, '', md5(p.id || k), 1, 'images/bench.jpg' FROM products p, generate_series(1, 2) k;
VACUUM ANALYZE products;
VACUUM ANALYZE images;
SQL
base="SELECT i.id FROM images i JOIN products p ON p.id = i.product_id WHERE TRUE AND p.price >= \$2::float8 AND p.price <= \$3::float8 AND (\$1::text IS NULL OR TRUE) AND (\$2::float8 IS NULL OR TRUE) AND (\$3::float8 IS NULL OR TRUE) AND (\$4::text IS NULL OR TRUE)"
ranges="0:50 47.5:52.5 49.5:50.5"
# settings of the measuring session (e.g. "SET random_page_cost = 1.1;")
pgset=${SL_BENCH_PRICE_SET:-}
# measure LABEL SQL: one row per range
measure() {
  local label=$1 sql=$2 r lo hi
  for r in $ranges; do
    lo=${r%%:*} hi=${r##*:}
    {
      echo "SET search_path = shoplens; SET plan_cache_mode = force_custom_plan; $pgset"
      echo "PREPARE f(text, float8, float8, text) AS $sql;"
      for _ in 1 2 3 4 5 6 7; do echo "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE f(NULL, $lo, $hi, NULL);"; done
    } | cl_pg psql -At -v ON_ERROR_STOP=1 > "$work/plans"
    /usr/bin/python3 - "$work/plans" "$label" "$lo" "$hi" "$n" <<'PY'
import json, statistics, sys
path, label, lo, hi, n = sys.argv[1:6]
docs, buf = [], ""
for line in open(path):
    buf += line
    try:
        docs.append(json.loads(buf)); buf = ""
    except ValueError:
        pass
def shape(node):
    t = node["Node Type"]
    if "Relation Name" in node:
        t += " " + node["Relation Name"] + (" using " + node["Index Name"] if "Index Name" in node else "")
    kids = [shape(c) for c in node.get("Plans", [])]
    if t in ("Hash", "Materialize", "Memoize", "Gather", "Sort") and len(kids) == 1:
        return kids[0] if t != "Sort" else "Sort(" + kids[0] + ")"
    return t + ("(" + ", ".join(kids) + ")" if kids else "")
ms = [d[0]["Execution Time"] for d in docs]
plan = docs[-1][0]["Plan"]
share = plan.get("Actual Rows", 0) / (2.0 * int(n))
print("| %s | %s..%s | %.3f | %.2f | %.2f..%.2f | %s |" % (label, lo, hi, share, statistics.median(ms), min(ms), max(ms),
      shape(plan)))
PY
  done
}
rows=$(
  cl_sql "SET search_path = shoplens; DROP INDEX products_price; DROP INDEX images_product;
          CREATE INDEX images_product ON images(product_id);" >/dev/null
  cl_sql "VACUUM ANALYZE shoplens.products; VACUUM ANALYZE shoplens.images;" >/dev/null
  measure "schema 1 (no price index), ORDER BY i.id" "$base ORDER BY i.id"
  cl_sql "SET search_path = shoplens; CREATE INDEX products_price ON products(price, id); DROP INDEX images_product;
          CREATE INDEX images_product ON images(product_id, id);" >/dev/null
  cl_sql "VACUUM ANALYZE shoplens.products; VACUUM ANALYZE shoplens.images;" >/dev/null
  measure "schema 2, no ORDER BY (this build)" "$base"
  measure "schema 2, with ORDER BY i.id" "$base ORDER BY i.id"
)
load=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "## Price filter on PostgreSQL (bench/cluster/price.sh)"
  echo
  echo "$n products (prices uniform in 0..100), $((2 * n)) images, PostgreSQL 15 with the test settings"
  echo "(shared_buffers 64MB), warm cache, load average $load. Execution time of the filter statement"
  echo "of a cluster store (the image ids passing the filter), median of 7 (min..max), EXPLAIN ANALYZE."
  echo
  echo "| statement | price range | share of images | median ms | min..max ms | plan |"
  echo "|---|---|---:|---:|---:|---|"
  echo "$rows"
  echo
} > "${SL_BENCH_OUT:-/dev/stdout}"
