#!/usr/bin/env bash
# The whole test command (CI runs it through .ci/run): install system dependencies and node modules,
# build, lint, typecheck, then run every unit test (src/**) and integration test (test/**) one file at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

# npm ci wipes node_modules, so only when it is missing or older than the lockfile (npm writes
# node_modules/.package-lock.json on every install).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

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
