#!/usr/bin/env bash
# `npm run bench`: installs what the benchmark needs when missing (Debian packages, node modules), builds,
# then runs bench/main.ts with the arguments given (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh --bench

# As scripts/test.sh: npm ci only when node_modules is missing or older than the lockfile.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

npm run build
exec node --import tsx bench/main.ts "$@"
