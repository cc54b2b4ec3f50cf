#!/usr/bin/env bash
# tests/e2e_server.sh - the HTTP API end to end: a real `shoplens serve` on a free loopback port
# over a store generated from the sample universe, driven with curl.
#
# Exercises every endpoint and documented status (200/201, 400, 401, 403, 404, 405, 408, 413,
# 415, 503 + Retry-After), auth, filters, mutated (hostile) requests, protocol edges over raw
# sockets (malformed heads, chunked bodies over the limit, slow clients: tests/server/protocol.py), concurrent searches while
# products are written (a search never sees half a product), SIGTERM under load (no failed
# in-flight request, exit 0, store intact), the refusal to listen beyond loopback with writes and
# no key, the request log, and finally checks every recorded response against docs/openapi.yaml.
set -euo pipefail

BIN=${SHOPLENS_BIN:-build/shoplens}
SRC=${SL_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
SAN=${SL_SANITIZED:-0}
. "$SRC/tests/server/lib.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/sl-e2e-server.XXXXXX")
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  jobs -p | xargs -r kill 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "e2e_server: FAIL: $*" >&2; [ -f "$work/server.log" ] && tail -20 "$work/server.log" >&2; exit 1; }
note() { echo "e2e_server: $*"; }

# ---- store ------------------------------------------------------------------------------------
N=16
"$BIN" sample catalog "$work/cat" --products $N --views 2 --photos 1 --size 320 --seed 7 >/dev/null
# Colour features only: this test is about the service, not retrieval quality (tests/e2e_web.sh
# searches a store with the default features); they keep ingest and search fast under ASan.
"$BIN" init --store "$work/store" --features color >/dev/null
"$BIN" add "$work/cat/catalog.csv" --store "$work/store" --quiet >/dev/null
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/key"
chmod 600 "$work/key"
KEY=$(cat "$work/key")

# ---- server control ---------------------------------------------------------------------------
URL=""
start_server() { # extra serve options...
  : > "$work/server.log"
  "$BIN" serve --store "$work/store" --listen 127.0.0.1:0 --threads 2 "$@" 2>>"$work/server.log" &
  server_pid=$!
  URL=$(sl_serve_url "$work/server.log" "$server_pid") || fail "server did not start"
}
stop_server() {
  kill -TERM "$server_pid"
  local rc=0
  wait "$server_pid" || rc=$?
  server_pid=""
  [ "$rc" -eq 0 ] || fail "serve exited $rc after SIGTERM"
}

# ---- requests: every response is recorded for the OpenAPI check --------------------------------
: > "$work/responses.tsv"
n_req=0
# req METHOD TARGET [curl args...] -> sets STATUS, CTYPE, BODY (file), HEADERS (file)
req() {
  local method=$1 target=$2
  shift 2
  n_req=$((n_req + 1))
  BODY="$work/r$n_req.body"
  HEADERS="$work/r$n_req.head"
  local out
  out=$(curl -sS -X "$method" -o "$BODY" -D "$HEADERS" -w '%{http_code}\t%{content_type}' "$@" "$URL$target") ||
    fail "$method $target: curl failed"
  STATUS=${out%%$'\t'*}
  CTYPE=${out#*$'\t'}
  printf '%s\t%s\t%s\t%s\t%s\n' "$method" "$target" "$STATUS" "$CTYPE" "$BODY" >> "$work/responses.tsv"
}
expect() { # STATUS [error code]
  [ "$STATUS" = "$1" ] || fail "expected $1, got $STATUS: $(head -c 300 "$BODY")"
  if [ $# -ge 2 ]; then
    grep -q "^{\"error\":{\"code\":\"$2\",\"message\":\"." "$BODY" || fail "expected error code $2: $(head -c 300 "$BODY")"
  fi
}
json() { /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($1)" "$BODY"; }
header() { grep -i "^$1:" "$HEADERS" | head -1 | cut -d: -f2- | tr -d ' \r'; }

img() { echo "$work/cat/images/$1_0.jpg"; }
photo() { echo "$work/cat/queries/$1/0.jpg"; }
cat_of() { /usr/bin/python3 -c 'import csv,sys; print(next(r["category"] for r in csv.DictReader(open(sys.argv[1])) if r["product_id"] == sys.argv[2]))' "$work/cat/catalog.csv" "$1"; }

start_server --api-key-file "$work/key" --max-body 2M --timeout 3 --head-timeout 2 --body-timeout 2
note "server at $URL"

# ---- service endpoints --------------------------------------------------------------------------
req GET /; expect 200
grep -q 'id="drop"' "$BODY" || fail "page lacks the drop zone"
[ "$(header Content-Security-Policy | head -c 17)" = "default-src'none'" ] || fail "page without a CSP"
grep -Eq '(src|href)="https?://' "$BODY" && fail "page refers to an external resource"
req GET /healthz; expect 200
[ "$(json 'd["status"]')" = ok ] || fail "healthz status"
req GET /favicon.ico; expect 200
[ "$CTYPE" = image/svg+xml ] || fail "favicon content type $CTYPE"
grep -q '<svg' "$BODY" || fail "favicon is not an SVG"
req GET /nope; expect 404 not_found
req PATCH /v1/search; expect 405 method_not_allowed
[ "$(header Allow)" = POST ] || fail "405 without Allow: POST"
req GET '/healthz?verbose=1'; expect 400 bad_request

# ---- catalog --------------------------------------------------------------------------------------
req GET /v1/categories; expect 200
want=$(/usr/bin/python3 -c '
import csv, sys, collections
rows = {r["product_id"]: r["category"] for r in csv.DictReader(open(sys.argv[1]))}
print(" ".join(sorted(f"{c}={n}" for c, n in collections.Counter(rows.values()).items())))' "$work/cat/catalog.csv")
got=$(json '" ".join(sorted(c["name"]+"="+str(c["products"]) for c in d["categories"]))')
[ "$got" = "$want" ] || fail "categories: got '$got' want '$want'"
[ "$(json 'd["products"]')" = $N ] || fail "categories: products should be the catalog's $N"

P=P000003
req GET "/v1/products/$P"; expect 200
[ "$(json 'd["id"]')" = $P ] || fail "product id"
[ "$(json 'len(d["images"])')" = 2 ] || fail "product should have 2 images"
IMG_ID=$(json 'd["images"][0]["id"]')
req GET /v1/products/NOPE; expect 404 not_found
req GET "/v1/images/$IMG_ID"; expect 200
[ "$CTYPE" = image/jpeg ] || fail "thumbnail content type $CTYPE"
/usr/bin/python3 - "$BODY" <<'EOF' || fail "thumbnail is not a metadata-free JPEG within 256 px"
import struct, sys
b = open(sys.argv[1], "rb").read()
assert b[:2] == b"\xff\xd8", "not a JPEG"
i, w, h = 2, 0, 0
while i < len(b):
    assert b[i] == 0xFF
    m = b[i + 1]
    if m in (0xD8, 0x01) or 0xD0 <= m <= 0xD7:
        i += 2
        continue
    n = struct.unpack(">H", b[i + 2:i + 4])[0]
    assert m != 0xE1, "APP1 (EXIF/XMP) present"
    if m in (0xC0, 0xC1, 0xC2):
        h, w = struct.unpack(">HH", b[i + 5:i + 9])
    if m == 0xDA:
        break
    i += 2 + n
assert 0 < max(w, h) <= 256, (w, h)
EOF
req GET "/v1/images/$IMG_ID?size=64"; expect 200
req GET "/v1/images/$IMG_ID?size=5000"; expect 400 bad_request
req GET /v1/images/999999; expect 404 not_found
req GET /v1/images/abc; expect 400 bad_request

# ---- search ---------------------------------------------------------------------------------------
req POST /v1/search -F "image=@$(img $P);type=image/jpeg"; expect 200
[ "$(json 'd["results"][0]["product_id"]')" = $P ] || fail "catalog image of $P not first: $(head -c 400 "$BODY")"
[ "$(json 'd["count"] == len(d["results"]) == 10')" = True ] || fail "default k is 10"
req POST '/v1/search?k=3' -H 'Content-Type: image/jpeg' --data-binary "@$(img $P)"; expect 200
[ "$(json 'd["results"][0]["product_id"]')" = $P ] || fail "raw body search"
[ "$(json 'len(d["results"])')" = 3 ] || fail "k=3"
req POST '/v1/search?k=5' -F "image=@$(photo $P);filename=shopper photo.jpg"; expect 200
[ "$(json 'len(d["results"])')" = 5 ] || fail "shopper photo search"
CAT=$(cat_of $P)
req POST "/v1/search?k=5&category=$(printf %s "$CAT" | sed 's/ /%20/g')" -F "image=@$(img $P)"; expect 200
[ "$(json "all(r['category'] == '$CAT' for r in d['results']) and len(d['results']) > 0")" = True ] || fail "category filter"
req POST '/v1/search?k=10&min_price=20&max_price=60' -F "image=@$(img $P)"; expect 200
[ "$(json 'all(r["price"] is not None and 20 <= r["price"] <= 60 for r in d["results"])')" = True ] || fail "price filter"
req POST '/v1/search?q=zzqxnotaword' -F "image=@$(img $P)"; expect 200
[ "$(json 'd["count"]')" = 0 ] || fail "text filter should match nothing"
WORD=$(/usr/bin/python3 -c 'import csv,sys; print(next(r["title"] for r in csv.DictReader(open(sys.argv[1])) if r["product_id"] == sys.argv[2]).split()[1])' "$work/cat/catalog.csv" $P)
req POST "/v1/search?q=$WORD" -F "image=@$(img $P)"; expect 200
[ "$(json 'd["count"] > 0')" = True ] || fail "text filter '$WORD' should match"
for bad in 'k=0' 'k=1001' 'k=abc' 'min_price=-1' 'min_price=9&max_price=1' 'colour=red' 'k=1&k=2'; do
  req POST "/v1/search?$bad" -F "image=@$(img $P)"; expect 400 bad_request
done
printf 'hello, not an image' > "$work/text.txt"
req POST /v1/search -F "image=@$work/text.txt;type=text/plain"; expect 415 unsupported_media_type
req POST /v1/search -H 'Content-Type: text/plain' --data-binary "@$work/text.txt"; expect 415 unsupported_media_type
head -c 300 "$(img $P)" > "$work/trunc.jpg"
req POST /v1/search -F "image=@$work/trunc.jpg;type=image/jpeg"; expect 400
req POST /v1/search -F "photo=@$(img $P)"; expect 400 bad_request
# a region of the photo (pixels of the photo as sent; the catalog images are 320x320)
req POST "/v1/search?k=3&region=40,40,240,240" -F "image=@$(img $P)"; expect 200
[ "$(json 'd["results"][0]["product_id"]')" = $P ] || fail "region search: $(head -c 300 "$BODY")"
req POST '/v1/search?region=100,0,300,50' -F "image=@$(img $P)"; expect 400 bad_request
grep -q '320x320 image' "$BODY" || fail "a region outside the photo: the message should give its size: $(cat "$BODY")"
for bad in 'region=1,2,3' 'region=a,b,c,d' 'region=0,0,0,10' 'region=-1,0,20,20' 'region=0,0,8,8' 'region=1,1,20,20&region=2,2,20,20'; do
  req POST "/v1/search?$bad" -F "image=@$(img $P)"; expect 400 bad_request
done
req GET "/v1/products/$P/similar?region=0,0,20,20"; expect 400 bad_request
for bad in ef=15 ef=4097 ef=abc; do # the HNSW candidate list length, 16..4096
  req POST "/v1/search?$bad" -F "image=@$(img $P)"; expect 400 bad_request
  grep -q "parameter 'ef' must be an integer in 16..4096" "$BODY" || fail "$bad: $(cat "$BODY")"
done
req GET "/v1/products/$P/similar?ef=3"; expect 400 bad_request
req POST "/v1/search?ef=64&k=3" -F "image=@$(img $P)"; expect 200
req POST /v1/search -H 'Content-Type: image/jpeg' --data-binary ''; expect 400 bad_request
head -c $((3 << 20)) /dev/urandom > "$work/big.bin"
req POST /v1/search -H 'Content-Type: image/jpeg' --data-binary "@$work/big.bin"; expect 413 payload_too_large
req POST /v1/search -F "image=@$work/big.bin;type=image/jpeg"; expect 413 payload_too_large

# ---- similar, classify, check ------------------------------------------------------------------------
req GET "/v1/products/$P/similar?k=5"; expect 200
[ "$(json "len(d['results']) == 5 and all(r['product_id'] != '$P' for r in d['results'])")" = True ] || fail "similar"
req GET /v1/products/NOPE/similar; expect 404 not_found
req POST '/v1/classify?k=1' -F "image=@$(img $P)"; expect 200
[ "$(json 'd["category"]')" = "$CAT" ] || fail "classify: $(cat "$BODY")"
req POST /v1/classify?k=0 -F "image=@$(img $P)"; expect 400 bad_request
req POST "/v1/products/$P/check" -F "image=@$(img $P)"; expect 200
[ "$(json 'd["match"]')" = True ] || fail "check of its own image: $(cat "$BODY")"
[ "$(json '0 <= d["confidence"] <= 1 and -1 <= d["score"] <= 1 and d["match"] == (d["confidence"] >= d["threshold"])')" = True ] \
  || fail "check confidence: $(cat "$BODY")"
OTHER=P000011
req POST "/v1/products/$OTHER/check" -F "image=@$(img $P)"; expect 200
[ "$(json 'd["match"]')" = False ] || fail "check of another product's image: $(cat "$BODY")"
req POST "/v1/products/$P/check?threshold=1" -F "image=@$(img $P)"; expect 200   # a confidence threshold
[ "$(json 'd["threshold"] == 1 and d["match"] == (d["confidence"] >= 1)')" = True ] || fail "check threshold: $(cat "$BODY")"
req POST "/v1/search?k=5" -F "image=@$(img $P)"; expect 200
[ "$(json 'all(-1 <= r["score"] <= 1 and 0 <= r["confidence"] <= 1 and r["match"] in (True, False) for r in d["results"])')" = True ] \
  || fail "search confidence fields: $(cat "$BODY")"
req POST /v1/products/NOPE/check -F "image=@$(img $P)"; expect 404 not_found
req POST "/v1/products/$P/check?threshold=2" -F "image=@$(img $P)"; expect 400 bad_request

# ---- writes and auth ----------------------------------------------------------------------------------
NEWIMG="$work/cat/images/P000014_1.jpg"
meta='{"title":"Server test product","category":"e2e","price":12.5,"attrs":{"colour":"teal"}}'
req PUT /v1/products/NEW1 -F "metadata=$meta;type=application/json" -F "image=@$NEWIMG"; expect 401 unauthorized
[ -n "$(header WWW-Authenticate)" ] || fail "401 without WWW-Authenticate"
req PUT /v1/products/NEW1 -H "Authorization: Bearer wrong-key-0123456789" -F "metadata=$meta" -F "image=@$NEWIMG"; expect 401 unauthorized
req DELETE /v1/products/$P; expect 401 unauthorized
AUTH=(-H "Authorization: Bearer $KEY")
req PUT /v1/products/NEW1 "${AUTH[@]}" -F "metadata=$meta;type=application/json" -F "image=@$NEWIMG"; expect 201
[ "$(json 'd["outcome"]')" = added ] || fail "put outcome"
req PUT /v1/products/NEW1 "${AUTH[@]}" -F "metadata=$meta;type=application/json" -F "image=@$NEWIMG"; expect 200
req GET /v1/products/NEW1; expect 200
[ "$(json 'd["title"] + "|" + str(d["price"]) + "|" + d["attrs"]["colour"]')" = "Server test product|12.5|teal" ] || fail "put metadata"
req POST '/v1/search?category=e2e' -F "image=@$NEWIMG"; expect 200
[ "$(json 'd["results"][0]["product_id"]')" = NEW1 ] || fail "new product not found by its image"
req PUT /v1/products/NEW2 "${AUTH[@]}" -F 'metadata={"title":1}' -F "image=@$NEWIMG"; expect 400 bad_request
req PUT /v1/products/NEW2 "${AUTH[@]}" -F 'metadata={"colour":"x"}' -F "image=@$NEWIMG"; expect 400 bad_request
req PUT /v1/products/NEW2 "${AUTH[@]}" -F 'metadata=not json' -F "image=@$NEWIMG"; expect 400 bad_request
req PUT /v1/products/NEW2 "${AUTH[@]}" -F "image=@$NEWIMG"; expect 400 bad_request
req PUT /v1/products/NEW2 "${AUTH[@]}" -F 'metadata={"id":"OTHER"}' -F "image=@$NEWIMG"; expect 400 bad_request
req PUT /v1/products/NEW2 "${AUTH[@]}" -F 'metadata={}' -F "image=@$work/text.txt"; expect 415 unsupported_media_type
req GET /v1/products/NEW2; expect 404 not_found
req PUT /v1/products/NEW2 "${AUTH[@]}" -H 'Content-Type: application/json' --data '{}'; expect 415 unsupported_media_type
# ids are UTF-8 once decoded: %ff is refused (it used to be stored as byte 0xFF)
req PUT /v1/products/%ff "${AUTH[@]}" -F "metadata=$meta;type=application/json" -F "image=@$NEWIMG"; expect 400 bad_request
grep -q 'UTF-8' "$BODY" || fail "the %ff refusal does not say why: $(cat "$BODY")"
req GET /v1/products/%ff; expect 400 bad_request
req DELETE /v1/products/NEW1 "${AUTH[@]}"; expect 200
req GET /v1/products/NEW1; expect 404 not_found
req DELETE /v1/products/NEW1 "${AUTH[@]}"; expect 404 not_found

# ---- concurrent searches while products are written ---------------------------------------------------
note "concurrent searches during writes"
rounds=6; [ "$SAN" = 1 ] && rounds=3
readers=()
for w in 1 2 3; do
  (
    for i in $(seq 1 $((rounds * 3))); do
      out=$(curl -sS -X POST -F "image=@$NEWIMG" "$URL/v1/search?k=3&category=e2e" -w '\n%{http_code}') || { echo "curl failed" >> "$work/conc.err"; continue; }
      code=${out##*$'\n'}
      body=${out%$'\n'*}
      [ "$code" = 200 ] || echo "status $code: $body" >> "$work/conc.err"
      # a result for a written product always carries its full metadata
      printf '%s' "$body" | /usr/bin/python3 -c '
import json, sys
for r in json.load(sys.stdin)["results"]:
    if r["product_id"].startswith("W") and (r["title"] != "Written " + r["product_id"] or r["price"] != 9.5):
        print("half-written product seen:", r)' >> "$work/conc.err"
    done
  ) &
  readers+=($!)
done
for i in $(seq 1 $rounds); do
  curl -sS -o /dev/null -w '%{http_code}\n' -X PUT "${AUTH[@]}" -F "metadata={\"title\":\"Written W$i\",\"category\":\"e2e\",\"price\":9.5}" \
    -F "image=@$NEWIMG" -F "image=@$work/cat/images/P000015_0.jpg" "$URL/v1/products/W$i" >> "$work/writes.out"
  if [ $((i % 2)) = 0 ]; then
    curl -sS -o /dev/null -w '%{http_code}\n' -X DELETE "${AUTH[@]}" "$URL/v1/products/W$((i - 1))" >> "$work/writes.out"
  fi
done
wait "${readers[@]}"
[ -s "$work/conc.err" ] && fail "concurrent searches: $(head -5 "$work/conc.err")"
[ "$(sort -u "$work/writes.out" | tr '\n' ' ')" = "200 201 " ] || [ "$(sort -u "$work/writes.out" | tr '\n' ' ')" = "201 200 " ] ||
  fail "writes during searches: $(sort "$work/writes.out" | uniq -c | tr '\n' ' ')"

# ---- metrics and the request log ------------------------------------------------------------------------
req GET /metrics; expect 200
grep -q '^shoplens_http_requests_total{route="search",status="200"} [1-9]' "$BODY" || fail "metrics: search counter"
grep -q '^shoplens_http_requests_total{route="search",status="413"} 2$' "$BODY" || fail "metrics: 413 counter"
grep -q '^shoplens_http_request_duration_seconds_bucket{route="search",le="+Inf"} [1-9]' "$BODY" || fail "metrics: histogram"
grep -q '^shoplens_images_indexed [1-9]' "$BODY" || fail "metrics: images indexed"
grep -q '^shoplens_index_size_bytes [0-9]' "$BODY" || fail "metrics: index size"
grep -q '^shoplens_http_requests_in_flight [1-9]' "$BODY" || fail "metrics: in flight"
grep -Eq ' POST /v1/search 200 [0-9.]+ms$' "$work/server.log" || fail "request log line format"
grep -q 'category=' "$work/server.log" && fail "the request log shows query strings"

# ---- hostile input: mutated requests, the server stays up and never answers 500 -----------------------
hostile=200; [ "$SAN" = 1 ] && hostile=100
/usr/bin/python3 "$SRC/tests/server/hostile.py" "$URL" "$(img $P)" $hostile || fail "hostile requests"
# protocol edges over raw sockets: malformed heads get one answer, chunked 413, slow clients
/usr/bin/python3 "$SRC/tests/server/protocol.py" "$URL" "$KEY" 2 "$(img $P)" || fail "protocol edges"
stop_server
grep -q 'stopped' "$work/server.log" || fail "no clean stop"

# ---- overload: 503 + Retry-After -------------------------------------------------------------------------
start_server --max-inflight 1 --read-only --ef 400
# 80 s at 20k/s: the window in which the next request meets it (it is stopped once seen; a short
# window was once missed on a loaded machine)
head -c 1600000 /dev/urandom > "$work/slow.bin"
curl -sS -o /dev/null --limit-rate 20k -H 'Content-Type: image/jpeg' --data-binary "@$work/slow.bin" "$URL/v1/search" 2>/dev/null &
slow=$!
# once the slow upload is in flight (a moment on a loaded machine), the next request is refused
for _ in $(seq 1 300); do
  req GET /healthz
  [ "$STATUS" = 503 ] && break
  sleep 0.1
done
expect 503 overloaded
[ "$(header Retry-After)" = 1 ] || fail "503 without Retry-After: 1"
kill "$slow" 2>/dev/null || true
wait "$slow" 2>/dev/null || true
# a request's in-flight slot is given back by the completion callback, which may run just after
# its client has the response: the next request can still meet the one slot taken (503). Ask
# again while it is refused, for at most 5 s (a slot never given back still fails here).
req_free() {
  for _ in $(seq 1 50); do
    req "$@"
    [ "$STATUS" = 503 ] || return 0
    sleep 0.1
  done
}
req_free PUT /v1/products/X -F 'metadata={}'; expect 403 forbidden
req_free GET /healthz; expect 200
stop_server

# ---- listening beyond loopback --------------------------------------------------------------------------
rc=0
"$BIN" serve --store "$work/store" --listen 0.0.0.0:0 >"$work/refuse.out" 2>&1 || rc=$?
[ $rc = 1 ] || fail "serve on 0.0.0.0 with writes and no key should fail, got $rc"
grep -q "API key" "$work/refuse.out" || fail "refusal message should mention the API key"

# ---- SIGTERM under load ------------------------------------------------------------------------------------
note "SIGTERM during load"
start_server --api-key-file "$work/key"
req GET /v1/categories; expect 200
cats_before=$(cat "$BODY")
clients=6; [ "$SAN" = 1 ] && clients=3
loaders=()
for c in $(seq 1 $clients); do
  (
    for i in $(seq 1 400); do
      rc=0
      code=$(curl -sS -o /dev/null -w '%{http_code}' -F "image=@$(img P00000$((c % 10)))" "$URL/v1/search?k=5" 2>>"$work/curl-load.err") || rc=$?
      if [ $rc = 7 ]; then echo refused >> "$work/load.$c"; break; fi   # listener closed: not in flight
      echo "$rc:$code" >> "$work/load.$c"
    done
  ) &
  loaders+=($!)
done
sleep 1.5
stop_server
wait "${loaders[@]}"
ok=$(cat "$work"/load.* | grep -c '^0:200$' || true)
bad=$(cat "$work"/load.* | grep -v '^0:200$' | grep -vc '^refused$' || true)
[ "$ok" -gt 0 ] || fail "no request succeeded under load"
[ "$bad" = 0 ] || fail "$bad requests failed during SIGTERM: $(cat "$work"/load.* | grep -v '^0:200$' | sort | uniq -c | tr '\n' ' ') $(head -3 "$work/curl-load.err")"
note "$ok searches completed under load, none failed; stopped cleanly"
grep -q 'finishing' "$work/server.log" || fail "no graceful-stop message"
start_server
req GET /v1/categories; expect 200
[ "$(cat "$BODY")" = "$cats_before" ] || fail "store changed across the restart"
req POST /v1/search -F "image=@$(img $P)"; expect 200
[ "$(json 'd["results"][0]["product_id"]')" = $P ] || fail "search after restart"
stop_server

# ---- every response against the spec ----------------------------------------------------------------------
/usr/bin/python3 "$SRC/tests/server/openapi_check.py" "$SRC/docs/openapi.yaml" "$work/responses.tsv" ||
  fail "responses do not match docs/openapi.yaml"
note "ok ($n_req recorded requests)"
