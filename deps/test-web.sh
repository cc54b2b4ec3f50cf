#!/usr/bin/env bash
# deps hook (server module): installs playwright-core for the browser test into
# tests/web/node_modules from the committed package-lock.json. Does nothing (and needs no
# network) when the locked version is already there.
set -euo pipefail
web=$(cd "$(dirname "$0")/../tests/web" && pwd)
want=$(node -p "require('$web/package-lock.json').packages['node_modules/playwright-core'].version" 2>/dev/null || echo none)
have=$(node -p "require('$web/node_modules/playwright-core/package.json').version" 2>/dev/null || echo missing)
if [ "$want" != "$have" ]; then
  echo "deps (test): npm ci in tests/web (playwright-core $want)"
  (cd "$web" && npm ci --no-audit --no-fund --loglevel=error)
fi
