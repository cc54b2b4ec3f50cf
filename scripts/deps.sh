#!/usr/bin/env bash
# Installs the Debian packages a stage needs (deps/debian-<stage>*.txt, one package per line,
# '#' comments; each module may add its own deps/debian-<stage>-<module>.txt), only those missing. Quiet when everything is there. Then runs deps/<stage>.sh
# hooks if present (e.g. npm packages for browser tests). Needs root only when something is missing.
# A package counts as there when it is installed or when an installed package provides it (e.g.
# `npm`, which a nodejs package from another archive may bundle and then conflicts with).
set -euo pipefail
stage=${1:-core}
here=$(cd "$(dirname "$0")/.." && pwd)
declare -A present=()
while IFS=$'\t' read -r status pkg provides; do
  [ "$status" = installed ] || continue
  present[$pkg]=1
  IFS=',' read -ra names <<< "$provides"
  for p in "${names[@]}"; do
    p=${p%%(*}; p=$(echo "$p" | tr -d '[:space:]')
    [ -n "$p" ] && present[$p]=1
  done
done < <(dpkg-query -W -f='${db:Status-Status}\t${Package}\t${Provides}\n' 2>/dev/null)
missing=()
for list in "$here"/deps/debian-"$stage"*.txt; do
  [ -f "$list" ] || continue
  while read -r pkg; do
    pkg=${pkg%%#*}; pkg=$(echo "$pkg" | tr -d '[:space:]')
    [ -z "$pkg" ] && continue
    [ -n "${present[$pkg]:-}" ] || missing+=("$pkg")
  done < "$list"
done
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "deps ($stage): installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  apt_get() { $SUDO apt-get -o DPkg::Lock::Timeout=600 "$@"; }
  # Refresh the package lists when they are missing or older than a day, and once more when the
  # install fails (lists that no longer match the archive: its packages moved on).
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    apt_get update -q >/dev/null
  fi
  if ! apt_get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
    echo "deps ($stage): install failed; refreshing the package lists and trying again"
    apt_get update -q >/dev/null
    apt_get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
for hook in "$here"/deps/"$stage"*.sh; do
  [ -f "$hook" ] && bash "$hook"
done
exit 0
