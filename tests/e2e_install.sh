#!/usr/bin/env bash
# e2e_install.sh - shoplens installed as a C library (cmake/install.cmake, `make install`):
#  - `cmake --install` of this build into a PREFIX, and with DESTDIR (staged: nothing outside it)
#  - libshoplens.so has a SONAME and exports exactly the functions the installed public headers
#    declare (all sl_*, no internal sl__ and nothing else: nm -D vs the compiler's list)
#  - both examples/ build against the installed copy with pkg-config (shared, staged with
#    PKG_CONFIG_SYSROOT_DIR, and static with `pkg-config --static`), run on a sample store and
#    agree with the CLI
#  - the man page renders with `man -l`, without warnings, and holds every line of every
#    command's --help
# Under the sanitizer build (SL_SANITIZED=1) the examples are built with the same sanitizers.
. "$(dirname "$0")/product_lib.sh"
build=${SL_BUILD_DIR:?SL_BUILD_DIR not set}
src=${SL_SOURCE_DIR:?SL_SOURCE_DIR not set}
cc=${CC:-cc}
cflags=(-std=c11 -Wall -Wextra -Werror -pedantic)
[ "${SL_SANITIZED:-0}" = 1 ] && cflags+=(-fsanitize=address,undefined -fno-omit-frame-pointer)
version=$("$bin" --version | awk '{ print $2 }')
major=${version%%.*}

# ---- install into a prefix ----------------------------------------------------------------
prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" > "$tmp/install.log"
pc=$(find "$prefix" -name shoplens.pc)
[ -n "$pc" ] || fail "no shoplens.pc installed"
export PKG_CONFIG_PATH=$(dirname "$pc")
pkg-config --exists --print-errors shoplens || fail "pkg-config cannot use shoplens.pc"
[ "$(pkg-config --modversion shoplens)" = "$version" ] || fail "shoplens.pc version != $version"
[ "$(pkg-config --variable=prefix shoplens)" = "$prefix" ] || fail "shoplens.pc prefix"
libdir=$(pkg-config --variable=libdir shoplens)
incdir=$(pkg-config --variable=includedir shoplens)
[ -x "$prefix/bin/shoplens" ] || fail "bin/shoplens not installed"
[ "$("$prefix/bin/shoplens" --version)" = "shoplens $version" ] || fail "installed CLI version"
for f in libshoplens.a libshoplens.so "libshoplens.so.$major"; do
  [ -e "$libdir/$f" ] || fail "$libdir/$f not installed"
done
diff <(cd "$src/include/shoplens" && ls *.h) <(cd "$incdir/shoplens" && ls) >&2 \
  || fail "installed headers differ from include/shoplens/*.h"
[ -f "$prefix/share/man/man1/shoplens.1" ] || fail "man page not installed"

# ---- the shared library: SONAME, exported symbols ------------------------------------------
so=$(readlink -f "$libdir/libshoplens.so")
soname=$(objdump -p "$so" | awk '$1 == "SONAME" { print $2 }')
[ "$soname" = "libshoplens.so.$major" ] || fail "SONAME is '$soname', expected libshoplens.so.$major"
[ "$(readlink "$libdir/libshoplens.so")" = "$soname" ] || fail "libshoplens.so must link to the SONAME"
nm -D --defined-only "$so" | awk '{ print $NF }' | sed 's/@.*//' | sort -u > "$tmp/exported"
grep -v '^sl_' "$tmp/exported" > "$tmp/not_sl" || true
[ ! -s "$tmp/not_sl" ] || fail "exported symbols not named sl_: $(head -5 "$tmp/not_sl" | tr '\n' ' ')"
! grep -q '^sl__' "$tmp/exported" || fail "internal symbols exported: $(grep '^sl__' "$tmp/exported" | head -5 | tr '\n' ' ')"
# Every function the installed headers declare (the compiler's own list), and nothing more.
for h in "$incdir"/shoplens/*.h; do echo "#include <shoplens/$(basename "$h")>"; done > "$tmp/all.c"
cc -std=c11 -I"$incdir" -fsyntax-only -aux-info "$tmp/aux" "$tmp/all.c"
grep -F "$incdir/shoplens/" "$tmp/aux" | grep ' extern ' \
  | sed -E 's/^[^(]*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*) \(.*/\1/' | sort -u > "$tmp/declared"
[ "$(wc -l < "$tmp/declared")" -gt 100 ] || fail "found only $(wc -l < "$tmp/declared") declarations in the headers"
diff "$tmp/declared" "$tmp/exported" > "$tmp/symdiff" \
  || fail "exports differ from the public declarations (< declared only, > exported only): $(grep '^[<>]' "$tmp/symdiff" | head -10 | tr '\n' ' ')"

# ---- the examples against the installed copy -----------------------------------------------
ex=$tmp/ex
mkdir -p "$ex"
for p in search_photo build_store; do
  # shellcheck disable=SC2046
  "$cc" "${cflags[@]}" -o "$ex/$p" "$src/examples/$p.c" $(pkg-config --cflags --libs shoplens) \
    || fail "examples/$p.c does not build with pkg-config"
done
# Static: libshoplens.a and what `pkg-config --static` lists for it.
# shellcheck disable=SC2046
"$cc" "${cflags[@]}" -o "$ex/search_photo_static" "$src/examples/search_photo.c" \
  $(pkg-config --cflags shoplens) $(pkg-config --static --libs shoplens | sed 's/-lshoplens\b/-l:libshoplens.a/') \
  || fail "static link with pkg-config --static failed"
export LD_LIBRARY_PATH=$libdir
# (outputs go through files: with pipefail, `ldd | grep -q` fails when grep's early exit
# kills ldd with SIGPIPE)
ldd "$ex/search_photo" > "$tmp/ldd"
ldd "$ex/search_photo_static" > "$tmp/ldd_static"
grep -q "libshoplens.so.$major => $libdir/" "$tmp/ldd" || fail "search_photo does not load the installed libshoplens.so"
! grep -q libshoplens "$tmp/ldd_static" || fail "search_photo_static still needs libshoplens.so"

cat=$tmp/cat
"$prefix/bin/shoplens" sample catalog "$cat" --products 10 --views 2 --photos 1 --size 128 --seed 5 >/dev/null
"$ex/build_store" "$cat/catalog.csv" "$tmp/store" color > "$tmp/build.out" 2> "$tmp/build.err" \
  || { cat "$tmp/build.err" >&2; fail "build_store failed"; }
"$bin" info --store "$tmp/store" --json > "$tmp/info.json"
grep -q "^ingested    20 rows: 10 added, 0 updated, 0 unchanged, 0 failed$" "$tmp/build.out" || fail "build_store report: $(cat "$tmp/build.out")"
grep -q "^products    $(j "$tmp/info.json" 'd["products"]')$" "$tmp/build.out" || fail "build_store products"
grep -q "^images      20 (20 indexed)$" "$tmp/build.out" || fail "build_store images"
grep -q "^features    $(j "$tmp/info.json" 'd["features"]') " "$tmp/build.out" || fail "build_store features"
[ "$(sed -En 's/^category +(.*[^ ]) +([0-9]+)$/\1 \2/p' "$tmp/build.out" | sort)" = \
  "$(j "$tmp/info.json" '"\n".join("%s %d" % kv for kv in sorted(d["categories"].items()))')" ] || fail "build_store categories"
grep -q "10/10 products" "$tmp/build.err" || fail "build_store progress"
# a row whose image is missing: reported, exit 3, the rest stays
cp "$cat/catalog.csv" "$cat/bad.csv"
echo "PBAD,images/missing.jpg,Bad,bags,1.00,," >> "$cat/bad.csv"
set +e; "$ex/build_store" "$cat/bad.csv" "$tmp/store" > "$tmp/bad.out" 2> "$tmp/bad.err"; rc=$?; set -e
[ "$rc" = 3 ] || fail "build_store with a bad row exited $rc, expected 3"
grep -q "^row 21 (PBAD): " "$tmp/bad.err" || fail "build_store must name the bad row: $(cat "$tmp/bad.err")"
grep -q "^products    10$" "$tmp/bad.out" || fail "the bad product must not be stored"

# search_photo (shared and static) ranks like the CLI
q=$cat/images/P000004_1.jpg
"$bin" search "$q" --store "$tmp/store" -k 4 --json > "$tmp/cli.json"
want=$(j "$tmp/cli.json" '"\n".join("%s %.3f" % (r["product_id"], r["score"]) for r in d["results"])')
for p in search_photo search_photo_static; do
  "$ex/$p" "$tmp/store" "$q" 4 > "$tmp/$p.out" || fail "$p failed"
  [ "$(awk '{ print $2, $4 }' "$tmp/$p.out")" = "$want" ] || fail "$p differs from shoplens search: $(cat "$tmp/$p.out")"
done
[ "$(awk 'NR == 1 { print $2 }' "$tmp/search_photo.out")" = P000004 ] || fail "search_photo: catalog image not first"
set +e; "$ex/search_photo" "$tmp/nostore" "$q" > /dev/null 2> "$tmp/err"; rc=$?; set -e
[ "$rc" = 1 ] && grep -q "SL_E_NOT_FOUND" "$tmp/err" || fail "search_photo on a missing store: exit $rc, $(cat "$tmp/err")"

# ---- DESTDIR: a staged install, used through PKG_CONFIG_SYSROOT_DIR --------------------------
stage=$tmp/stage
DESTDIR=$stage cmake --install "$build" --prefix /opt/shoplens > /dev/null
[ "$(ls "$stage")" = opt ] && [ "$(ls "$stage/opt")" = shoplens ] || fail "DESTDIR install wrote outside DESTDIR/PREFIX"
spc=$(find "$stage" -name shoplens.pc)
grep -qx "prefix=/opt/shoplens" "$spc" || fail "staged shoplens.pc must name the final prefix"
export PKG_CONFIG_PATH=$(dirname "$spc") PKG_CONFIG_SYSROOT_DIR=$stage
[[ " $(pkg-config --cflags shoplens) " == *" -I$stage/opt/shoplens/include "* ]] || fail "sysroot cflags"
# shellcheck disable=SC2046
"$cc" "${cflags[@]}" -o "$ex/search_staged" "$src/examples/search_photo.c" $(pkg-config --cflags --libs shoplens) \
  || fail "examples/search_photo.c does not build against the staged install"
LD_LIBRARY_PATH=$stage/opt/shoplens/${libdir#"$prefix"/} "$ex/search_staged" "$tmp/store" "$q" 4 > "$tmp/staged.out" \
  || fail "search_staged failed"
cmp -s "$tmp/staged.out" "$tmp/search_photo.out" || fail "staged build differs"
unset PKG_CONFIG_SYSROOT_DIR

# ---- the man page --------------------------------------------------------------------------
man=$prefix/share/man/man1/shoplens.1
LC_ALL=C MANWIDTH=200 man --warnings -l "$man" > "$tmp/man.txt" 2> "$tmp/man.err" || fail "man -l failed: $(cat "$tmp/man.err")"
[ ! -s "$tmp/man.err" ] || fail "man -l warns: $(head -5 "$tmp/man.err")"
grep -q "^SHOPLENS(1) .* SHOPLENS(1)$" "$tmp/man.txt" || fail "man page header"
grep -q "shoplens $version" "$tmp/man.txt" || fail "man page version"
norm() { sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e 's/[[:space:]]\{1,\}/ /g' | grep -v '^$'; }
norm < "$tmp/man.txt" | sort -u > "$tmp/man.lines"
cmds=$("$bin" --help | awk '/^Commands:/ { f = 1; next } f && /^  / { print $1 }')
[ "$(echo "$cmds" | wc -l)" -gt 10 ] || fail "command list"
for c in $cmds; do
  "$bin" help "$c" | norm | sort -u > "$tmp/help.lines"
  comm -23 "$tmp/help.lines" "$tmp/man.lines" > "$tmp/missing"
  [ ! -s "$tmp/missing" ] || fail "man page lacks lines of 'shoplens $c --help': $(head -3 "$tmp/missing")"
done
echo "e2e_install: ok ($(wc -l < "$tmp/exported") exported functions, $(echo "$cmds" | wc -l) commands in the man page)"
