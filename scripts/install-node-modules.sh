#!/usr/bin/env bash
# npm ci, only when node_modules is missing or older than the lockfile (npm writes node_modules/.package-lock.json
# on every install): npm ci wipes node_modules first, so not on every run. Used by test.sh, bench/ and reliability/.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
