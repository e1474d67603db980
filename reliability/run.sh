#!/usr/bin/env bash
# `npm run reliability`: installs what the suites need when missing (Debian packages, node modules), builds,
# then runs reliability/main.ts with the arguments given (see reliability/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

bash scripts/install-node-modules.sh

npm run build
exec node --import tsx reliability/main.ts "$@"
