#!/usr/bin/env bash
# Builds the official Tailscale client (tailscaled, tailscale), DERP server (derper) and DERP/STUN
# clients (derpprobe, stunc) that the tests against real Tailscale binaries use (e2e/lab/tailscale.ts,
# e2e/lab/derp-probes.ts) and the relay-vs-derper benchmark runs. Only when Go is present; a binary
# already reporting this version is kept, so a re-run costs nothing.
set -euo pipefail

# Go's own installer puts it here; a non-login shell may not have it on PATH.
PATH="$PATH:/usr/local/go/bin"
tailscale_version=v1.102.5
tailscale_bin=${WEFT_GO_BIN:-/var/cache/weft-go/bin}
if command -v go >/dev/null 2>&1; then
  mkdir -p "$tailscale_bin"
  for cmd in tailscaled tailscale derper derpprobe stunc; do
    if go version -m "$tailscale_bin/$cmd" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+tailscale\.com[[:space:]]+$tailscale_version([[:space:]]|\$)"; then
      continue
    fi
    echo "setup: building $cmd (tailscale.com $tailscale_version) into $tailscale_bin" >&2
    GOBIN="$tailscale_bin" go install "tailscale.com/cmd/$cmd@$tailscale_version"
  done
else
  echo "setup: Go not found; the lab tests against the official Tailscale client will be skipped" >&2
fi

