#!/usr/bin/env bash
# tests/e2e_feeds.sh - feeds a shop actually has: Google Merchant column names (id, title,
# description, link, image_link, additional_image_link, price "12.99 USD", availability, brand,
# gtin, product_type), in CSV and JSON Lines, with image URLs served by a local HTTP server
# (tests/feeds/image_server.py on loopback, started here): images that download (directly,
# after a delay, through a redirect, after a 503), and every way a download goes wrong - 404, a slow server
# (timeout, retried), an image over the size limit (announced and chunked), a redirect loop, an
# HTML page served as image/jpeg, a redirect to ftp. Checks the per-row failures (row, URL,
# reason), what was stored (price, currency, url, category, attributes, all images), that a 404
# is asked once and a timeout retried, that downloads run in parallel (--jobs), and that add and
# sync with URLs behave like with files (re-run: nothing changes; sync removes what went).
set -euo pipefail
BIN=${SHOPLENS_BIN:-build/shoplens}
SRC=${SL_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
py=/usr/bin/python3
work=$(mktemp -d "${TMPDIR:-/tmp}/sl-e2e-feeds.XXXXXX")
srv=""
cleanup() { [ -n "$srv" ] && kill "$srv" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "e2e_feeds: FAIL: $*" >&2; exit 1; }
note() { echo "e2e_feeds: $*"; }
j() { "$py" -c "import json,sys; d=json.load(open(sys.argv[1])); v = ($2); print(v)" "$1"; }

"$BIN" sample catalog "$work/cat" --products 12 --views 2 --photos 0 --size 200 --seed 5 >/dev/null
# the server's files: the catalog images, and the first view of one product as PNG
"$BIN" sample image --product 6 --view 0 --seed 5 --size 200 -o "$work/cat/images/P000006_0.png" >/dev/null
"$py" "$SRC/tests/feeds/image_server.py" "$work/cat/images" > "$work/port" &
srv=$!
for _ in $(seq 1 100); do [ -s "$work/port" ] && break; sleep 0.1; done
U="http://127.0.0.1:$(awk '{print $2}' "$work/port")"
stats() { curl -sS "$U/stats" > "$work/stats.json"; }

# ---- a Google Merchant feed (CSV) --------------------------------------------------------------------
I="$U/img"
cat > "$work/merchant.csv" <<EOF
id,title,description,link,image_link,additional_image_link,price,availability,brand,gtin,product_type
P000000,Lime box,A lime box,https://shop.example/p/0,$U/delay/P000000_0.jpg,"$I/P000000_1.jpg",12.99 USD,in stock,Troko,4006381333931,Home > Boxes
P000001,Navy mug,A mug,https://shop.example/p/1,$U/redirect/P000001_0.jpg,,3.50 EUR,in stock,Gorzen,,Home > Kitchen
P000002,Missing,gone,https://shop.example/p/2,$U/missing/P000002_0.jpg,,1.00 USD,out of stock,,,Home
P000003,Web page,html,https://shop.example/p/3,$U/html/P000003_0.jpg,,1.00 USD,,,,Home
P000004,Loop,loop,https://shop.example/p/4,$U/loop/0,,1.00 USD,,,,Home
P000005,Slow,slow,https://shop.example/p/5,$I/P000005_0.jpg,$U/slow/P000005_1.jpg,2.00 USD,,,,Home
P000006,Flaky png,png,https://shop.example/p/6,$U/flaky/P000006_0.png,,7 GBP,,,,Garden
P000007,Huge,big,https://shop.example/p/7,$U/big/P000007_0.jpg,,1.00 USD,,,,Home
P000008,Endless,chunked,https://shop.example/p/8,$U/bigchunked/P000008_0.jpg,,1.00 USD,,,,Home
P000009,Ftp,ftp,https://shop.example/p/9,$U/ftp/P000009_0.jpg,,1.00 USD,,,,Home
P000010,Ten,ten,https://shop.example/p/10,$U/delay/P000010_0.jpg,"$U/delay/P000010_1.jpg, $I/P000000_1.jpg",9.99 usd,in stock,,,Home > Boxes
P000011,Bad price,x,https://shop.example/p/11,$I/P000011_0.jpg,,12.99 US,,,,Home
EOF
"$BIN" init --store "$work/store" >/dev/null
rc=0
"$BIN" add "$work/merchant.csv" --store "$work/store" --jobs 4 --fetch-timeout 2 --fetch-retries 1 --json > "$work/add.json" 2> "$work/add.err" || rc=$?
[ $rc = 3 ] || fail "add should exit 3 (some rows failed), got $rc: $(cat "$work/add.err")"
"$py" - "$work/add.json" "$U" <<'EOF' || fail "merchant feed report: $(cat "$work/add.json")"
import json, sys
d, U = json.load(open(sys.argv[1])), sys.argv[2]
assert (d["rows"], d["products"], d["added"]) == (12, 12, 4), d
f = {x["row"]: x for x in d["failures"]}
want = {  # row: (status, words in the message, the URL named)
    3: ("SL_E_NOT_FOUND", "HTTP 404 Not Found", "/missing/P000002_0.jpg"),
    4: ("SL_E_UNSUPPORTED", "not an image: the server sent an HTML or XML document (Content-Type: image/jpeg)", "/html/"),
    5: ("SL_E_IO", "more than 5 redirects", "/loop/0"),
    6: ("SL_E_IO", "timed out after 2 s (2 attempts)", "/slow/P000005_1.jpg"),
    8: ("SL_E_TOO_LARGE", "larger than the limit of 33554432 bytes", "/big/"),
    9: ("SL_E_TOO_LARGE", "larger than the limit of 33554432 bytes", "/bigchunked/"),
    10: ("SL_E_INVALID", "only http and https", "/ftp/"),
    12: ("SL_E_INVALID", "bad price (the currency must be 3 letters", None),
}
assert sorted(f) == sorted(want), sorted(f)
for row, (status, words, url) in want.items():
    x = f[row]
    assert x["status"] == status and words in x["message"], (row, x)
    assert url is None or (x["file"].startswith(U) and url in x["file"]), (row, x)
EOF
note "merchant CSV: 4 products added, 8 rows failed with their reasons"
# what was stored
"$BIN" show P000000 --store "$work/store" --json > "$work/p0.json"
[ "$(j "$work/p0.json" 'd["title"], d["price"], d["currency"], d["url"], d["category"], len(d["images"]), d["attrs"]')" = \
  "('Lime box', 12.99, 'USD', 'https://shop.example/p/0', 'Home > Boxes', 2, {'availability': 'in stock', 'brand': 'Troko', 'gtin': '4006381333931'})" ] ||
  fail "P000000 as stored: $(cat "$work/p0.json")"
[ "$(j "$work/p0.json" 'd["images"][0]["source"].endswith("/delay/P000000_0.jpg")')" = True ] || fail "an image's source is its URL"
"$BIN" show P000006 --store "$work/store" --json > "$work/p6.json"
[ "$(j "$work/p6.json" 'd["price"], d["currency"], d["category"], len(d["images"])')" = "(7.0, 'GBP', 'Garden', 1)" ] || fail "P000006: $(cat "$work/p6.json")"
"$BIN" show P000010 --store "$work/store" --json > "$work/p10.json"
[ "$(j "$work/p10.json" 'd["currency"], len(d["images"])')" = "('USD', 3)" ] || fail "P000010 (two additional images): $(cat "$work/p10.json")"
"$BIN" show P000001 --store "$work/store" --json > "$work/p1.json"
[ "$(j "$work/p1.json" 'd["currency"], len(d["images"])')" = "('EUR', 1)" ] || fail "P000001 (through a redirect): $(cat "$work/p1.json")"
# the product whose slow additional image failed is not written at all
rc=0; "$BIN" show P000005 --store "$work/store" >/dev/null 2>&1 || rc=$?
[ $rc != 0 ] || fail "P000005 was written although one of its images failed"
# search by a downloaded image finds its product
"$BIN" search "$work/cat/images/P000010_0.jpg" --store "$work/store" -k 1 --json > "$work/s.json"
[ "$(j "$work/s.json" 'd["results"][0]["product_id"], d["results"][0]["url"], d["results"][0]["currency"]')" = \
  "('P000010', 'https://shop.example/p/10', 'USD')" ] || fail "search: $(cat "$work/s.json")"
# what the server saw: the 404 once, the timeout and the 503 twice, the same URL once, in parallel
stats
"$py" - "$work/stats.json" <<'EOF' || fail "server requests: $(cat "$work/stats.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["/missing/P000002_0.jpg"] == 1, s          # 404: never retried
assert s["/slow/P000005_1.jpg"] == 2, s              # timeout: retried once (--fetch-retries 1)
assert s["/flaky/P000006_0.png"] == 2, s             # 503, then the image
assert s["/img/P000000_1.jpg"] == 1, s               # named by two products: fetched once
assert s["/loop/5"] == 1 and "/loop/6" not in s, s   # 5 redirects followed, no more
assert s["max_concurrent"] >= 3, s                   # --jobs 4: the delayed ones overlap
EOF
[ -z "$(ls -d "$work/store"/downloads-* 2>/dev/null)" ] || fail "the downloads directory was left behind"

# ---- the same feed again: nothing changes, nothing re-described ------------------------------------
rc=0
"$BIN" add "$work/merchant.csv" --store "$work/store" --fetch-timeout 2 --fetch-retries 0 --json > "$work/again.json" 2>/dev/null || rc=$?
[ $rc = 3 ] || fail "the second add should exit 3 again, got $rc"
[ "$(j "$work/again.json" 'd["added"], d["updated"], d["skipped"], d["images_extracted"]')" = "(0, 0, 4, 0)" ] || fail "re-run: $(cat "$work/again.json")"

# ---- JSON Lines with Merchant keys (additional_image_link as a list) --------------------------------
cat > "$work/merchant.jsonl" <<EOF
{"id": "J1", "title": "Jay one", "link": "https://shop.example/j/1", "image_link": "$I/P000003_0.jpg", "additional_image_link": ["$I/P000003_1.jpg"], "price": "USD 4.20", "product_type": "Home > Boxes", "brand": "Jay"}
{"id": "J2", "title": "Jay two", "image_link": "$U/missing/J2.jpg", "price": "1.00 USD"}
{"id": "J3", "product_id": "J3-own", "image": "$I/P000004_0.jpg", "image_link": "$I/P000004_1.jpg", "price": 5}
EOF
rc=0
"$BIN" add "$work/merchant.jsonl" --store "$work/store" --json > "$work/jl.json" 2>/dev/null || rc=$?
[ $rc = 3 ] || fail "jsonl add should exit 3, got $rc: $(cat "$work/jl.json")"
[ "$(j "$work/jl.json" 'd["added"], [(f["row"], f["status"]) for f in d["failures"]]')" = "(2, [(2, 'SL_E_NOT_FOUND')])" ] || fail "jsonl: $(cat "$work/jl.json")"
"$BIN" show J1 --store "$work/store" --json > "$work/j1.json"
[ "$(j "$work/j1.json" 'd["price"], d["currency"], d["url"], len(d["images"]), d["attrs"]["brand"]')" = "(4.2, 'USD', 'https://shop.example/j/1', 2, 'Jay')" ] || fail "J1: $(cat "$work/j1.json")"
# own names win over Merchant's; the other one is kept as an attribute
"$BIN" show J3-own --store "$work/store" --json > "$work/j3.json"
[ "$(j "$work/j3.json" 'd["images"][0]["source"].endswith("P000004_0.jpg"), d["attrs"]["id"], d["attrs"]["image_link"].endswith("P000004_1.jpg")')" = "(True, 'J3', True)" ] ||
  fail "J3: $(cat "$work/j3.json")"
note "merchant JSONL: additional images as a list, own names before Merchant's"

# ---- sync with URLs ----------------------------------------------------------------------------------
head -2 "$work/merchant.csv" > "$work/one.csv"
rc=0
"$BIN" sync "$work/one.csv" --store "$work/store" --max-removals 100% --json > "$work/sync.json" 2>/dev/null || rc=$?
[ $rc = 0 ] || fail "sync: exit $rc: $(cat "$work/sync.json")"
[ "$(j "$work/sync.json" 'd["skipped"], d["removed"]')" = "(1, 5)" ] || fail "sync: $(cat "$work/sync.json")"
note "ok"
