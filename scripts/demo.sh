#!/usr/bin/env bash
# One command for a fresh machine (as root): install, build (the desktop UI too), and run a local
# tailnet demo whose laptop node's UI is served on the host's loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run build:renderer
exec node e2e/dist/demo/main.js
