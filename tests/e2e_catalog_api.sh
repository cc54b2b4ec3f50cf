#!/usr/bin/env bash
# e2e_catalog_api.sh - the catalog over HTTP, against a real `shoplens serve` on loopback:
#  - GET /v1/products: cursor pages (every product once), filters, total, bad cursors/limits;
#  - PUT is a full replacement and refuses metadata that would clear fields by accident (named);
#  - PATCH: JSON merge patch (RFC 7396), attrs merged, images replaced (old files deleted),
#    404/400/401/415;
#  - search paging (offset, ranks), k up to 1000, url and currency in results, price limits
#    with their range in the message;
#  - thumbnails come from the store's own copies (the feed's folder may go); for a schema 1 store
#    whose files went, the error names no server path;
#  - every response checked against docs/openapi.yaml.
set -euo pipefail
BIN=${SHOPLENS_BIN:-build/shoplens}
SRC=${SL_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
. "$SRC/tests/server/lib.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/sl-e2e-catalog-api.XXXXXX")
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "e2e_catalog_api: FAIL: $*" >&2; [ -f "$work/server.log" ] && tail -5 "$work/server.log" >&2; exit 1; }
py=/usr/bin/python3

"$BIN" sample catalog "$work/cat" --products 14 --views 2 --photos 0 --size 160 --seed 9 --quiet
"$BIN" add "$work/cat/catalog.csv" --store "$work/store" --features color --currency EUR --quiet
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/key"
AUTH=(-H "Authorization: Bearer $(cat "$work/key")")

start_server() { # STORE
  : > "$work/server.log"
  "$BIN" serve --store "$1" --listen 127.0.0.1:0 --threads 2 --api-key-file "$work/key" 2>>"$work/server.log" &
  server_pid=$!
  URL=$(sl_serve_url "$work/server.log" "$server_pid") || fail "server did not start"
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || fail "serve exit"; server_pid=""; }

: > "$work/responses.tsv"
n=0
req() { # METHOD TARGET [curl args] -> STATUS, BODY
  local method=$1 target=$2; shift 2
  n=$((n + 1)); BODY="$work/r$n.body"
  local out
  out=$(curl -sS -X "$method" -o "$BODY" -w '%{http_code}\t%{content_type}' "$@" "$URL$target") || fail "$method $target: curl"
  STATUS=${out%%$'\t'*}
  printf '%s\t%s\t%s\t%s\t%s\n' "$method" "$target" "$STATUS" "${out#*$'\t'}" "$BODY" >> "$work/responses.tsv"
}
expect() { [ "$STATUS" = "$1" ] || fail "expected $1, got $STATUS: $(head -c 300 "$BODY")"; }
json() { "$py" -c "import json,sys; d=json.load(open(sys.argv[1])); print(($1))" "$BODY"; }

start_server "$work/store"

# ---- GET /v1/products: pages by cursor, filters ------------------------------------------------
ids=""; cursor=""; pages=0
while :; do
  req GET "/v1/products?limit=4${cursor:+&cursor=$cursor}"; expect 200
  pages=$((pages + 1))
  [ "$(json 'd["total"] == 14 and d["count"] == len(d["products"]) <= 4')" = True ] || fail "page: $(head -c 300 "$BODY")"
  ids="$ids $(json '" ".join(p["id"] for p in d["products"])')"
  cursor=$(json 'd["next_cursor"] or ""')
  [ -n "$cursor" ] || break
done
[ "$pages" = 4 ] || fail "14 products by 4: 4 pages, got $pages"
[ "$(echo $ids)" = "$(seq -f 'P%06g' 0 13 | tr '\n' ' ' | sed 's/ $//')" ] || fail "every product once, in order: $ids"
req GET "/v1/products/P000002"; expect 200
[ "$(json 'd["currency"]')" = EUR ] || fail "product currency"
CAT=$(json 'd["category"]')
req GET "/v1/products?category=$(printf %s "$CAT" | sed 's/ /%20/g')&max_price=1000"; expect 200
[ "$(json "all(p['category'] == '$CAT' for p in d['products']) and d['total'] == len(d['products']) > 0")" = True ] || fail "category filter"
for bad in 'limit=0' 'limit=1001' 'cursor=zzz' 'min_price=-1' 'max_price=2e12'; do
  req GET "/v1/products?$bad"; expect 400
done
req GET "/v1/products?limit=0"; expect 400
grep -q "1\.\.1000" "$BODY" || fail "limit message must give the range"

# ---- PUT is a full replacement: no accidental wipe -----------------------------------------------
P=P000003
req GET "/v1/products/$P"; expect 200; cp "$BODY" "$work/before.json"
req PUT "/v1/products/$P" "${AUTH[@]}" -F 'metadata={"price":2}'; expect 400
for f in title category description url currency; do grep -q "$f" "$BODY" || fail "the 400 must name $f: $(cat "$BODY")"; done
req GET "/v1/products/$P"; expect 200
cmp -s "$BODY" "$work/before.json" || fail "a refused PUT changed the product"
req PUT "/v1/products/$P" "${AUTH[@]}" -F 'metadata={"price":1e13}'; expect 400
grep -q "0\.\.1000000000000" "$BODY" || fail "price message must give the range: $(cat "$BODY")"
# naming every field (null clears one on purpose) is accepted
meta=$("$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({k: d[k] for k in ("title","category","url","currency","attrs")} | {"description": None, "price": 3}))' "$work/before.json")
req PUT "/v1/products/$P" "${AUTH[@]}" -F "metadata=$meta"; expect 200
req GET "/v1/products/$P"; expect 200
[ "$(json 'd["description"], d["price"], d["title"] != ""')" = "('', 3.0, True)" ] || fail "explicit PUT: $(cat "$BODY")"

# ---- PATCH: a merge patch ----------------------------------------------------------------------
req PATCH "/v1/products/$P" -H 'Content-Type: application/merge-patch+json' --data '{"price":2}'; expect 401
req PATCH "/v1/products/$P" "${AUTH[@]}" -H 'Content-Type: application/merge-patch+json' \
  --data '{"price": 2.5, "currency": "usd", "attrs": {"colour": "teal", "size": {"h": 3}}}'; expect 200
[ "$(json 'd["outcome"], d["price"], d["currency"], d["attrs"]["colour"], d["title"] != ""')" = "('updated', 2.5, 'USD', 'teal', True)" ] || fail "patch: $(cat "$BODY")"
req PATCH "/v1/products/$P" "${AUTH[@]}" -H 'Content-Type: application/json' --data '{"attrs": {"colour": null, "size": {"w": 4}}}'; expect 200
[ "$(json 'd["attrs"]')" = "{'size': {'h': 3, 'w': 4}}" ] || fail "attrs merge: $(cat "$BODY")"
req PATCH "/v1/products/$P" "${AUTH[@]}" -H 'Content-Type: application/json' --data '{"attrs": {"size": {"w": 4}}}'; expect 200
[ "$(json 'd["outcome"]')" = unchanged ] || fail "an idempotent patch"
old_files=$(ls "$work/store/images" | wc -l)
old_id=$(json 'd["images"][0]["id"]')
req PATCH "/v1/products/$P" "${AUTH[@]}" -F 'metadata={"title":"New photo"}' -F "image=@$work/cat/images/P000013_1.jpg"; expect 200
[ "$(json 'd["title"], len(d["images"]), d["images"][0]["id"] != '"$old_id"', d["price"]')" = "('New photo', 1, True, 2.5)" ] || fail "patch with an image: $(cat "$BODY")"
# both old copies go; the new image is P000013's too, so its copy was already there
[ "$(ls "$work/store/images" | wc -l)" = $((old_files - 2)) ] || fail "files of replaced images must go ($old_files -> $(ls "$work/store/images" | wc -l))"
req GET "/v1/images/$old_id"; expect 404
req PATCH /v1/products/NOPE "${AUTH[@]}" -H 'Content-Type: application/json' --data '{"price":1}'; expect 404
# an id in UTF-8 is quoted as itself in the message (it was 'caf??')
req GET "/v1/products/caf%C3%A9-noir"; expect 404
[ "$(json 'd["error"]["message"]')" = "no product 'café-noir'" ] || fail "UTF-8 id in a message: $(cat "$BODY")"
req PATCH "/v1/products/$P" "${AUTH[@]}" -H 'Content-Type: application/json' --data '{"price":'; expect 400
req PATCH "/v1/products/$P" "${AUTH[@]}" -H 'Content-Type: application/json' --data '{"colour":"red"}'; expect 400
req PATCH "/v1/products/$P" "${AUTH[@]}" -H 'Content-Type: application/json' --data '{"price":-3}'; expect 400
grep -q "0\.\.1000000000000" "$BODY" || fail "patch price range"
req PATCH "/v1/products/$P" "${AUTH[@]}" -H 'Content-Type: text/plain' --data 'price=2'; expect 415
req PATCH "/v1/products/$P" "${AUTH[@]}" -H 'Content-Type: application/json' --data ''; expect 400

# ---- search: paging, k above 100, url and currency ---------------------------------------------
IMG="$work/cat/images/P000005_0.jpg"
req POST '/v1/search?k=6' -F "image=@$IMG"; expect 200; cp "$BODY" "$work/s6.json"
[ "$(json 'd["results"][0]["url"].endswith("P000005"), d["results"][0]["currency"]')" = "(True, 'EUR')" ] || fail "url/currency: $(head -c 300 "$BODY")"
req POST '/v1/search?k=3&offset=3' -F "image=@$IMG"; expect 200
"$py" - "$work/s6.json" "$BODY" <<'EOF' || fail "page 2"
import json, sys
a, b = (json.load(open(f))["results"] for f in sys.argv[1:3])
assert [r["product_id"] for r in b] == [r["product_id"] for r in a[3:6]], (a, b)
assert [r["rank"] for r in b] == [4, 5, 6], b
EOF
req POST '/v1/search?k=500' -F "image=@$IMG"; expect 200
[ "$(json 'd["count"]')" = 14 ] || fail "k=500 on 14 products"
req GET "/v1/products/P000001/similar?k=5&offset=5"; expect 200
[ "$(json '[r["rank"] for r in d["results"]]')" = "[6, 7, 8, 9, 10]" ] || fail "similar paging"
req POST '/v1/search?k=10&offset=995' -F "image=@$IMG"; expect 400
grep -q "at most 1000" "$BODY" || fail "offset message: $(cat "$BODY")"
req POST '/v1/search?offset=-1' -F "image=@$IMG"; expect 400
req POST '/v1/search?max_price=2e12' -F "image=@$IMG"; expect 400
grep -q "1e+12\|1000000000000" "$BODY" || fail "price filter range: $(cat "$BODY")"

# ---- thumbnails come from the store's copies ---------------------------------------------------
req GET "/v1/products/P000006"; expect 200
IMG_ID=$(json 'd["images"][0]["id"]')
mv "$work/cat" "$work/moved"
req GET "/v1/images/$IMG_ID?size=64"; expect 200
mv "$work/moved" "$work/cat"
req DELETE /v1/products/P000006 "${AUTH[@]}"; expect 200
req GET "/v1/images/$IMG_ID"; expect 404
stop_server

# ---- a schema 1 store whose feed folder went: no server path in the error ------------------------
"$BIN" add "$work/cat/catalog.csv" --store "$work/old" --features color --quiet
"$py" "$SRC/tests/schema1_store.py" "$work/old"
rm -r "$work/old/images"
mv "$work/cat" "$work/gone"
start_server "$work/old"
req GET /v1/images/1; expect 500
grep -q "cannot be read" "$BODY" || fail "thumbnail error: $(cat "$BODY")"
grep -q "$work\|/gone\|/tmp\|\.jpg" "$BODY" && fail "the error reveals a server path: $(cat "$BODY")"
stop_server
mv "$work/gone" "$work/cat"

"$py" "$SRC/tests/server/openapi_check.py" "$SRC/docs/openapi.yaml" "$work/responses.tsv" || fail "responses do not match docs/openapi.yaml"
echo "e2e_catalog_api: ok ($n requests)"
