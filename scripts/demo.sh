#!/usr/bin/env bash
# One command for a fresh machine (as root): install, build, and run a local tailnet demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node e2e/dist/demo/main.js
