#!/usr/bin/env bash
# scripts/fresh-root.sh - the README's promise, proven on a truly fresh Debian 12: bootstraps a
# minimal root (debootstrap --variant=minbase bookworm, from the Debian archive apt uses on this
# machine) with only make, git and ca-certificates added, clones this repository's HEAD into it
# (a clean clone: uncommitted changes are not part of it) and runs there, as a new user would:
#   make demo, make test, make install, the examples built with pkg-config against the installed
#   library and run on the demo store, `man shoplens`, and the exports of the installed .so.
# Prints one line per command, "<command>: exit <status> (<seconds> s)", a closing
# "fresh-root: N passed, N failed" line, and exits non-zero when anything failed.
#
# Needs root (debootstrap, chroot, mounts). /proc, /sys and /dev are mounted into the root for the
# commands and unmounted afterwards, also on failure or interrupt; the root is then deleted.
# The chroot shares this machine's network: it reaches the Debian archive and the npm registry
# as the host does: resolv.conf, apt's Acquire settings, the TLS certificates this machine trusts
# beyond Debian's bundle and npm's global settings (no credentials) are copied in.
# Environment:
#   SL_FRESH_CACHE       where the bootstrapped root is kept as a tarball between runs
#                        (default /var/cache/shoplens-fresh-root; empty: no cache)
#   SL_FRESH_CACHE_DAYS  a cached root older than this is bootstrapped anew (default 7)
#   SL_FRESH_DIR         parent directory of the temporary root (default /var/tmp)
#   SL_FRESH_KEEP=1      keep the root afterwards (unmounted) to look around in
#   SL_FRESH_TEST        which tests run in the root: "full" (default: `make test`, the README's
#                        command: release and sanitizer suites) or "release" (`make test-release`:
#                        the test packages installed and the release suite run). CI runs
#                        `make test` on its own clean clone first, so its fresh root takes
#                        "release": the same install from nothing, in half the time.
# The script is one { } block: bash reads all of it before running any, so a checkout that
# changes this file during a run does not change the run.
{
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
suite=bookworm
includes=make,git,ca-certificates
cache=${SL_FRESH_CACHE-/var/cache/shoplens-fresh-root}
cache_days=${SL_FRESH_CACHE_DAYS:-7}
tests=${SL_FRESH_TEST:-full}
t0=$(date +%s)

say() { echo "fresh-root: $*"; }
die() { say "$*" >&2; echo "fresh-root: 0 passed, 1 failed"; exit 1; }
case "$tests" in full) test_cmd="make test" ;; release) test_cmd="make test-release" ;;
  *) die "SL_FRESH_TEST must be full or release, not '$tests'" ;; esac
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount)"
sha=$(git -C "$here" rev-parse HEAD) || die "not a git checkout: $here"
if [ -n "$(git -C "$here" status --porcelain --untracked-files=no)" ]; then
  say "note: uncommitted changes in $here are not tested; a clean clone of HEAD is"
fi
bash "$here/scripts/deps.sh" ci || die "cannot install debootstrap (scripts/deps.sh ci)"

# ---- the Debian archive apt uses here --------------------------------------------------------
# Its "bookworm*" entries, both formats: deb822 stanzas (*.sources) and one-line entries (*.list).
host_sources() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && awk -v RS= -v ORS='\n\n' -v s="$suite" \
      '/(^|\n)Types:[^\n]*deb([ \n]|$)/ && $0 ~ "(^|\n)Suites:[^\n]*" s { print }' "$f"
  done
}
host_lists() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk -v s="$suite" '$1 == "deb" { l = $0; sub(/\[[^]]*\][ \t]*/, ""); if ($3 ~ "^" s) print l }'
}
# The mirror of the main suite (not -security): the entry whose suites include "bookworm" itself.
mirror=$(host_sources | awk -v RS= -v s="$suite" '{
  n = split($0, l, "\n"); u = ""; ok = 0
  for (i = 1; i <= n; i++) {
    if (l[i] ~ /^URIs:/) { split(l[i], f, " "); u = f[2] }
    if (l[i] ~ /^Suites:/) { m = split(l[i], f, " "); for (j = 2; j <= m; j++) if (f[j] == s) ok = 1 }
  }
  if (ok && u != "") { print u; exit }
}')
[ -n "$mirror" ] || mirror=$(host_lists | awk -v s="$suite" '{ sub(/\[[^]]*\][ \t]*/, "") } $3 == s { print $2; exit }')
[ -n "$mirror" ] || die "no Debian $suite archive in /etc/apt/sources.list*"

# ---- the root: from the cache, or bootstrapped --------------------------------------------------
root=$(mktemp -d "${SL_FRESH_DIR:-/var/tmp}/shoplens-fresh-root.XXXXXX") || die "mktemp failed"
cleanup() {
  local p
  # Processes still running in the root (a server a failed test left behind): ours, started by
  # the chroot commands; they would keep the mounts busy.
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && kill -KILL "${p#/proc/}" 2>/dev/null
  done
  for m in dev sys proc; do
    if mountpoint -q "$root/$m"; then
      umount -R "$root/$m" 2>/dev/null || umount -R -l "$root/$m"
    fi
  done
  if grep -qF " $root/" /proc/self/mountinfo; then
    say "warning: $root still has mounts; not deleting it" >&2
  elif [ "${SL_FRESH_KEEP:-0}" = 1 ]; then
    say "root kept in $root"
  else
    rm -rf --one-file-system "$root"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

key=$(printf '%s %s minbase %s v1' "$suite" "$mirror" "$includes" | sha256sum | cut -c1-16)
tarball=${cache:+$cache/$suite-minbase-$key.tar}
if [ -n "$tarball" ] && [ -f "$tarball" ] && [ -n "$(find "$tarball" -mtime -"$cache_days")" ]; then
  say "root: $suite minbase + $includes, cached $(date -r "$tarball" +%F) ($tarball)"
  tar -C "$root" --numeric-owner -xpf "$tarball" || die "cannot unpack $tarball"
else
  say "root: debootstrap --variant=minbase --include=$includes $suite from $mirror"
  s=$(date +%s)
  if ! debootstrap --variant=minbase --include="$includes" "$suite" "$root" "$mirror" > "$root.debootstrap.log" 2>&1; then
    tail -30 "$root.debootstrap.log" >&2
    rm -f "$root.debootstrap.log"
    die "debootstrap failed"
  fi
  rm -f "$root.debootstrap.log"
  say "root: bootstrapped in $(( $(date +%s) - s )) s"
  if [ -n "$tarball" ]; then
    mkdir -p "$cache" && rm -f "$cache/$suite-minbase-"*.tar \
      && tar -C "$root" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball" \
      || say "warning: could not cache the root in $tarball" >&2
  fi
fi

chmod 755 "$root"   # it is /: users other than root (apt's _apt) must get through it

# The same archive entries as this machine (bookworm, -updates, -security), the way apt reaches
# it here (Acquire:: settings), its name server, and no services started by package scripts.
srcs=$(host_sources)
if [ -n "$srcs" ]; then
  printf '%s\n' "$srcs" > "$root/etc/apt/sources.list.d/debian.sources"
  host_lists > "$root/etc/apt/sources.list"
elif [ -n "$(host_lists)" ]; then
  host_lists > "$root/etc/apt/sources.list"
fi
for f in /etc/apt/apt.conf.d/*; do   # proxies, date checks: how apt gets through here
  [ -f "$f" ] && grep -qE '^[^/#]*Acquire::(https?::|ftp::|Check-)' "$f" && cp "$f" "$root/etc/apt/apt.conf.d/"
done
# The TLS trust of this machine: certificates its bundle holds beyond Debian's (a workplace's
# TLS-inspecting proxy, say) go into the root's store, and npm's global settings come along
# (without any credentials), so the root's npm reaches the registry as this machine's does.
certs() { awk '/-----BEGIN CERTIFICATE-----/ { c = ""; next } /-----END CERTIFICATE-----/ { print c; next } { c = c $0 }' "$1"; }
n=0
while read -r b64; do
  n=$((n + 1))
  { echo "-----BEGIN CERTIFICATE-----"; printf '%s\n' "$b64" | fold -w 64; echo "-----END CERTIFICATE-----"; } \
    > "$root/usr/local/share/ca-certificates/host-$n.crt"
done < <(grep -vxFf <(certs "$root/etc/ssl/certs/ca-certificates.crt") <(certs /etc/ssl/certs/ca-certificates.crt 2>/dev/null))
if [ "$n" -gt 0 ]; then
  chroot "$root" update-ca-certificates > /dev/null 2>&1 || die "update-ca-certificates failed in the root"
  say "root: $n certificate(s) this machine trusts beyond Debian's ca-certificates added"
fi
for f in /etc/npmrc /usr/etc/npmrc; do
  [ -f "$f" ] || continue
  mkdir -p "$root$(dirname "$f")"
  grep -viE '_auth|token|password|username|email|cert=|key=' "$f" > "$root$f" || true
done
rm -f "$root/etc/resolv.conf"
cp -L /etc/resolv.conf "$root/etc/resolv.conf" || die "cannot copy /etc/resolv.conf"
grep -qw localhost "$root/etc/hosts" 2>/dev/null || printf '127.0.0.1 localhost\n::1 localhost\n' >> "$root/etc/hosts"
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d" && chmod +x "$root/usr/sbin/policy-rc.d"
# A throwaway root: dpkg need not fsync every file it unpacks (what Debian's container images do).
echo force-unsafe-io > "$root/etc/dpkg/dpkg.cfg.d/fresh-root-unsafe-io"

# ---- the clean clone --------------------------------------------------------------------------
repo=/root/shoplens
git clone -q --no-hardlinks "$here" "$root$repo" && git -C "$root$repo" checkout -q --detach "$sha" \
  || die "cannot clone $here into the root"
say "clone: $(git -C "$root$repo" log -1 --format='%h %s' | cut -c1-100)"

mount -t proc proc "$root/proc" && mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys" \
  && mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev" || die "cannot mount /proc, /sys, /dev"

# ---- the commands -------------------------------------------------------------------------------
passed=0
failed=0
results=()
step() { # step NAME COMMAND: runs COMMAND with bash in the clone, in a clean login environment
  local name=$1 cmd=$2 s rc
  echo
  echo "==== $name"
  s=$(date +%s)
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -c "cd $repo && $cmd" < /dev/null 2>&1
  rc=$?
  results+=("$name: exit $rc ($(( $(date +%s) - s )) s)")
  echo "${results[-1]}"
  if [ "$rc" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}
step "make demo" "make demo"
step "$test_cmd" "$test_cmd"
step "make install" "make install"
step "examples build" "make -C examples"
step "example build_store" "examples/build_store build/demo/catalog/catalog.csv /tmp/example-store"
step "example search_photo" 'q=$(ls -d build/demo/catalog/queries/* | sed -n 8p); examples/search_photo build/demo/store $q/1.jpg 5 && examples/search_photo /tmp/example-store $q/1.jpg 3'
step "man shoplens" 'MANWIDTH=100 man shoplens > /tmp/shoplens.man && head -12 /tmp/shoplens.man'
step "nm -D exports only sl_" 'so=/usr/local/lib/libshoplens.so; n=$(nm -D --defined-only $so | wc -l); echo "$n symbols"; ! nm -D --defined-only $so | awk "{ print \$NF }" | grep -v "^sl_[a-z0-9]"'

echo
echo "==== fresh Debian 12 root ($suite minbase + $includes), clean clone of $sha"
printf '%s\n' "${results[@]}"
say "total $(( $(date +%s) - t0 )) s"
echo "fresh-root: $passed passed, $failed failed"
[ "$failed" = 0 ]
exit
}
