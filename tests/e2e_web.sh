#!/usr/bin/env bash
# tests/e2e_web.sh - the web page in Debian's chromium (headless) through playwright-core:
# serves a generated sample store (one product without a category), uploads a generated shopper
# photo and checks that the right product comes first, the cards, "Similar" and the way back, a
# box drawn on a photo of two products, the header count and the icon (tests/web/page.test.js).
# Screenshots go to build/test-artifacts/.
# Needs `make deps` (chromium, node, tests/web/node_modules via deps/test-web.sh).
set -euo pipefail
BIN=${SHOPLENS_BIN:-build/shoplens}
SRC=${SL_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
BUILD=${SL_BUILD_DIR:-$SRC/build}
. "$SRC/tests/server/lib.sh"
[ -x /usr/bin/chromium ] || { echo "e2e_web: /usr/bin/chromium missing (run make deps)" >&2; exit 1; }
[ -d "$SRC/tests/web/node_modules/playwright-core" ] || bash "$SRC/deps/test-web.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/sl-e2e-web.XXXXXX")
pid=""
cleanup() { [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$BIN" sample catalog "$work/cat" --products 10 --views 1 --photos 0 --size 320 --seed 11 >/dev/null
# one product without a category: the page's header must still count it
/usr/bin/python3 - "$work/cat/catalog.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
for r in rows:
    if r["product_id"] == "P000009":
        r["category"] = ""
with open(sys.argv[1], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(rows)
EOF
"$BIN" init --store "$work/store" >/dev/null
"$BIN" add "$work/cat/catalog.csv" --store "$work/store" --currency EUR --quiet >/dev/null
# The shopper photo: a different seed-independent variant than the catalog views, at phone size.
"$BIN" sample photo --product 5 --variant 3 --seed 11 --size 640 -o "$work/shopper.jpg" >/dev/null

"$BIN" serve --store "$work/store" --listen 127.0.0.1:0 --threads 2 --read-only 2>"$work/server.log" &
pid=$!
url=$(sl_serve_url "$work/server.log" "$pid")

export SL_URL=$url SL_PHOTO="$work/shopper.jpg" SL_EXPECT=P000005 SL_ARTIFACTS="$BUILD/test-artifacts" SL_PRODUCTS=10
# a photo of two products is composed in the page from these two catalog images
export SL_LEFT="$work/cat/images/P000002_0.jpg" SL_LEFT_ID=P000002 SL_RIGHT="$work/cat/images/P000007_0.jpg" SL_RIGHT_ID=P000007
# ASan builds are slower; chromium itself is not instrumented.
(cd "$SRC/tests/web" && node page.test.js)
kill -TERM "$pid"
wait "$pid"
pid=""
echo "e2e_web: ok (screenshots in $SL_ARTIFACTS)"
