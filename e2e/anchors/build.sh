#!/bin/sh
# Builds the Go anchor program (e2e/anchors/derp: Tailscale's real DERP and STUN clients at
# tailscale.com v1.102.5) into the folder the relay's anchor test and the relay-vs-derper
# benchmark look in. Needs Go and the module proxy (scripts/setup-tailscale.sh calls it).
set -eu
BIN=${WEFT_GO_BIN:-/var/cache/weft-go/bin}
mkdir -p "$BIN"
cd "$(dirname "$0")/derp"
go build -o "$BIN/derp-anchor" .
echo "built $BIN/derp-anchor"
