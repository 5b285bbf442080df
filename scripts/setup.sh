#!/usr/bin/env bash
# Installs everything Weft needs on a fresh Debian/Ubuntu machine (as root), then builds it.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(wireguard-go wireguard-tools iproute2 nftables iputils-ping iperf3 chromium postgresql procps openssl bind9-dnsutils miniupnpd-nftables)
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

# PostgreSQL for control replicas and the store tests: start the cluster (no systemd needed) and give
# this user a role that may create the tests' throw-away databases (peer auth over the local socket).
if [ "$(id -u)" = 0 ]; then
  cluster=$(pg_lsclusters --no-header | awk 'NR == 1 { print $1 " " $2 }')
  if [ -z "$cluster" ]; then
    pg_createcluster "$(ls /usr/lib/postgresql | sort -n | tail -1)" main >/dev/null
    cluster=$(pg_lsclusters --no-header | awk 'NR == 1 { print $1 " " $2 }')
  fi
  # shellcheck disable=SC2086 # "VERSION NAME", two words on purpose
  pg_lsclusters --no-header | awk 'NR == 1 { print $4 }' | grep -q online || pg_ctlcluster $cluster start
  me=$(id -un)
  runuser -u postgres -- psql -qtAc "select 1 from pg_roles where rolname = '$me'" | grep -q 1 ||
    runuser -u postgres -- psql -qc "create role \"$me\" login createdb"
fi

# The official Tailscale client and DERP server for the lab tests against real Tailscale binaries.
bash scripts/setup-tailscale.sh

# Electron's binary cannot be downloaded everywhere; the app fetches it on a desktop's npm install.
export ELECTRON_SKIP_BINARY_DOWNLOAD=1
npm ci --no-fund --no-audit
npm run build
