#!/usr/bin/env bash
# Installs everything Weft needs on a fresh Debian/Ubuntu machine (as root), then builds it.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(wireguard-go wireguard-tools iproute2 nftables iputils-ping iperf3 chromium postgresql procps openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing packages ${missing[*]}; run this script as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The official Tailscale client and DERP server for the lab tests against real Tailscale binaries.
bash scripts/setup-tailscale.sh

# Electron's binary cannot be downloaded everywhere; the app fetches it on a desktop's npm install.
export ELECTRON_SKIP_BINARY_DOWNLOAD=1
npm ci --no-fund --no-audit
npm run build
