# tests/product_lib.sh - shared preamble of the product e2e tests (sourced, not run by CTest):
# the binary, a temporary directory removed on exit, fail(), and j FILE EXPR to evaluate a
# Python expression over a JSON file (d = the parsed document).
set -euo pipefail
bin=${SHOPLENS_BIN:?SHOPLENS_BIN not set}
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
j() { "$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
