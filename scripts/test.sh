#!/usr/bin/env bash
# Runs every check and test suite, then prints one closing line: "N passed, N failed".
# Suites: lint, type-check/build, type-check of the tests (vitest runs them untyped), unit+integration (vitest),
# bounded fuzz (vitest), network lab (vitest, root), desktop UI (Chromium).
set -uo pipefail
cd "$(dirname "$0")/.."

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
checks_passed=0
checks_failed=0
check() { # name, command...
  local name=$1; shift
  echo "== $name" >&2
  if "$@"; then checks_passed=$((checks_passed + 1)); else checks_failed=$((checks_failed + 1)); echo "!! $name failed" >&2; fi
}

check lint npx biome ci .
check build npm run build --silent
check 'test types' npm run typecheck:tests --silent
echo "== unit and integration tests" >&2
npx vitest run --reporter=default --reporter=json --outputFile.json="$out/unit.json"
echo "== fuzz, bounded (200 inputs per entry point, fixed seed; npm run fuzz for the full run)" >&2
FUZZ_RUNS=200 FUZZ_SEED=20260 npx vitest run -c fuzz/vitest.config.ts --reporter=default --reporter=json --outputFile.json="$out/fuzz.json"
echo "== network lab tests" >&2
npx vitest run -c vitest.e2e.config.ts --reporter=default --reporter=json --outputFile.json="$out/e2e.json"

echo "== desktop UI tests (Chromium)" >&2
npx vitest run -c e2e/ui/vitest.config.ts --reporter=default --reporter=json --outputFile.json="$out/ui.json"

node scripts/summarize-tests.mjs "$checks_passed" "$checks_failed" "$out/unit.json" "$out/fuzz.json" "$out/e2e.json" "$out/ui.json"
