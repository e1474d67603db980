#!/usr/bin/env bash
# The whole test command (CI runs it through .ci/run): install system dependencies and node modules,
# build, lint, typecheck, then run every unit test (src/**) and integration test (test/**) one file at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

bash scripts/install-node-modules.sh

npm run build
npm run lint
npm run typecheck

mapfile -t test_files < <(find src test -name '*.test.ts' -not -path '*/node_modules/*' 2>/dev/null | sort)
if [ "${#test_files[@]}" -eq 0 ]; then
  echo "test.sh: no *.test.ts files found under src/ or test/" >&2
  exit 1
fi
echo "test.sh: running ${#test_files[@]} test files"
node --import tsx --test --test-concurrency=1 --test-timeout=600000 "${test_files[@]}"
