#!/bin/sh
# deb/rpm post-remove: stop and remove the helper service (the group is left for re-installs).
set -e
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now weft-helper.service 2>/dev/null || true
fi
rm -f /usr/lib/systemd/system/weft-helper.service
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
