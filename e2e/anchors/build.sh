#!/bin/sh
# Builds the Go anchors (real Tailscale DERP/STUN clients, derper) into the cache folder the tests
# and benchmarks look in. Needs Go and the module proxy; a few minutes on 2 cores the first time.
set -eu
BIN=${WEFT_GO_BIN:-/var/cache/weft-go/bin}
TS_VERSION=v1.102.5
mkdir -p "$BIN"
cd "$(dirname "$0")/derp"
go build -o "$BIN/derp-anchor" .
[ -x "$BIN/derper" ] || GOBIN="$BIN" go install "tailscale.com/cmd/derper@$TS_VERSION"
echo "built $BIN/derp-anchor and $BIN/derper ($TS_VERSION)"
