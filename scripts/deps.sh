#!/usr/bin/env bash
# Installs the Debian packages a stage needs (deps/debian-<stage>*.txt, one package per line,
# '#' comments; each module may add its own deps/debian-<stage>-<module>.txt), only those missing. Quiet when everything is there. Then runs deps/<stage>.sh
# hooks if present (e.g. npm packages for browser tests). Needs root only when something is missing.
set -euo pipefail
stage=${1:-core}
here=$(cd "$(dirname "$0")/.." && pwd)
missing=()
for list in "$here"/deps/debian-"$stage"*.txt; do
  [ -f "$list" ] || continue
  while read -r pkg; do
    pkg=${pkg%%#*}; pkg=$(echo "$pkg" | tr -d '[:space:]')
    [ -z "$pkg" ] && continue
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done < "$list"
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps ($stage): installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  # Refresh the package lists when they are missing or older than a day.
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
  fi
  $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
for hook in "$here"/deps/"$stage"*.sh; do
  [ -f "$hook" ] && bash "$hook"
done
exit 0
