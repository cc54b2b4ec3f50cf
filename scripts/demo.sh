#!/usr/bin/env bash
# make demo: the main job on the built-in sample catalog.
#  1. generates a sample shop (a few hundred products, several photos each) with catalog.csv
#  2. ingests it into a store (progress bar with rate and ETA)
#  3. searches with generated shopper photos and prints the results as a table
# Everything goes to $DEMO_DIR (default build/demo). DEMO_PRODUCTS / DEMO_VIEWS change the size.
set -euo pipefail
bin=${1:-build/shoplens}
demo=${DEMO_DIR:-$(dirname "$bin")/demo}
products=${DEMO_PRODUCTS:-300}
views=${DEMO_VIEWS:-3}
store=$demo/store
cat=$demo/catalog

"$bin" --version
rm -rf "$demo"
mkdir -p "$demo"
echo
echo "== 1. a sample shop: $products products x $views catalog photos, plus shopper photos"
"$bin" sample catalog "$cat" --products "$products" --views "$views" --photos 2 --size 256
head -3 "$cat/catalog.csv" | cut -c1-150

echo
echo "== 2. ingest: shoplens add $cat/catalog.csv --store $store"
"$bin" add "$cat/catalog.csv" --store "$store"
"$bin" info --store "$store"

echo
echo "== 3. searches with shopper photos (the photo is never stored)"
hits=0
total=0
picks=$(ls "$cat/queries" | sort | awk -v n="$products" 'NR == 8 || NR == int(n / 3) || NR == int(2 * n / 3) || NR == n - 3')
for p in $picks; do
  q=$cat/queries/$p/1.jpg
  [ -f "$q" ] || continue
  echo
  echo "-- shoplens search $q -k 5   (the shopper photographed $p)"
  "$bin" search "$q" --store "$store" -k 5
  top=$("$bin" search "$q" --store "$store" -k 1 --json | sed -n 's/.*"product_id": "\([^"]*\)".*/\1/p' | head -1)
  total=$((total + 1))
  [ "$top" = "$p" ] && hits=$((hits + 1))
done
first=$(sed -n '2s/,.*//p' "$cat/catalog.csv")
cat1=$(sed -n '2p' "$cat/catalog.csv" | cut -d, -f4)
echo
q0=$cat/queries/$(echo $picks | cut -d' ' -f1)/0.jpg
echo "-- filtered: shoplens search $q0 -k 5 --category '$cat1' --max-price 60"
"$bin" search "$q0" --store "$store" -k 5 --category "$cat1" --max-price 60
echo
echo "-- recommendations: shoplens similar $first -k 5"
"$bin" similar "$first" --store "$store" -k 5
echo
q1=$cat/queries/$(echo $picks | cut -d' ' -f2)/0.jpg
echo "-- auto-classification: shoplens classify $q1"
"$bin" classify "$q1" --store "$store"
echo
echo "right product first in $hits of $total demo searches"
echo "store: $store   (try: $bin search PHOTO --store $store)"

echo
echo "== 4. the web page"
if [ -t 0 ] && [ -t 1 ] && [ "${SL_DEMO_SERVE:-1}" != 0 ]; then
  here=$(cd "$(dirname "$0")/.." && pwd)
  . "$here/tests/server/lib.sh"
  log=$(mktemp "${TMPDIR:-/tmp}/shoplens-demo-serve.XXXXXX")
  "$bin" serve --store "$store" --listen "${SL_DEMO_LISTEN:-127.0.0.1:8080}" --read-only 2>"$log" &
  srv=$!
  trap 'kill -TERM $srv 2>/dev/null; wait $srv 2>/dev/null; rm -f "$log"' EXIT
  url=$(sl_serve_url "$log" $srv) || exit 1
  echo "web page: $url/   (upload a photo from $cat/queries/; Ctrl-C to stop)"
  wait $srv
else
  echo "not on a terminal, so not serving; to open the page run:"
  echo "  $bin serve --store $store --read-only     # then browse http://127.0.0.1:8080/"
fi
