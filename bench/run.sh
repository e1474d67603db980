#!/usr/bin/env bash
# `npm run bench`: installs what the benchmark needs when missing (Debian packages, node modules), builds,
# then runs bench/main.ts with the arguments given (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh --bench

bash scripts/install-node-modules.sh

npm run build
exec node --import tsx bench/main.ts "$@"
