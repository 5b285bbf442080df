#!/usr/bin/env bash
# Builds the official Tailscale client (tailscaled, tailscale), DERP server (derper) and DERP/STUN
# clients (derpprobe, stunc) that the tests against real Tailscale binaries use (e2e/lab/tailscale.ts,
# e2e/lab/derp-probes.ts) and the relay-vs-derper benchmark runs, and headscale for the
# control-vs-headscale benchmark. Only when Go is present; a binary already reporting this version is
# kept, so a re-run costs nothing.
set -euo pipefail

# Go's own installer puts it here; a non-login shell may not have it on PATH.
PATH="$PATH:/usr/local/go/bin"
tailscale_version=v1.102.5
headscale_version=v0.27.1
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
  # headscale is built from a throw-away module requiring it at the pinned release rather than with
  # `go install …@version`, which also asks the proxy for the module's version list (a proxy that
  # serves only pinned versions refuses that). With nothing else required, the versions of its
  # dependencies are those of its own go.mod, as with go install.
  if ! go version -m "$tailscale_bin/headscale" 2>/dev/null | grep -Eq "[[:space:]]github\.com/juanfont/headscale[[:space:]]+$headscale_version([[:space:]]|\$)"; then
    echo "setup: building headscale $headscale_version into $tailscale_bin" >&2
    build=$(mktemp -d)
    # Only a benchmark uses headscale: a failed build must not fail the set-up (or CI).
    if ! (
      # `set -e` does not hold inside an `if` condition: each step is chained instead.
      cd "$build" &&
        go mod init weft-headscale-build >/dev/null 2>&1 &&
        go get "github.com/juanfont/headscale/cmd/headscale@$headscale_version" &&
        go build -o "$tailscale_bin/headscale" github.com/juanfont/headscale/cmd/headscale
    ); then
      echo "setup: headscale $headscale_version did not build; npm run bench -- control-vs-headscale will not run" >&2
    fi
    rm -rf "$build"
  fi
else
  echo "setup: Go not found; the lab tests against the official Tailscale client will be skipped" >&2
fi

