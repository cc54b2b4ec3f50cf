#!/usr/bin/env bash
# make demo: the main job on the built-in sample (grows as the engine does).
set -euo pipefail
bin=${1:-build/shoplens}
"$bin" --version
"$bin" --help
