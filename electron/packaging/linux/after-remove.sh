#!/bin/sh
# deb/rpm post-remove. On an upgrade (deb: "upgrade", rpm: 1) the helper keeps running and keeps the
# kill switch; the new package's post-install restarts it. On removal (deb: "remove"/"purge", rpm: 0)
# the helper takes down everything it set up (SIGINT: interfaces, routes, firewall, kill switch),
# then the service goes (the group is left for re-installs).
set -e
case "${1:-remove}" in
  upgrade | 1 | 2) exit 0 ;;
esac
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable weft-helper.service 2>/dev/null || true
  if systemctl is-active --quiet weft-helper.service; then
    # SIGINT makes the helper tear down and exit 0; then stop has nothing left to do.
    systemctl kill --kill-whom=main --signal=SIGINT weft-helper.service || true
    i=0
    while systemctl is-active --quiet weft-helper.service && [ "$i" -lt 30 ]; do
      sleep 1
      i=$((i + 1))
    done
    systemctl stop weft-helper.service 2>/dev/null || true
  fi
fi
rm -f /usr/lib/systemd/system/weft-helper.service /usr/lib/tmpfiles.d/weft.conf
if [ -e /var/lib/weft-helper/owned.json ]; then
  # A helper stopped earlier (SIGTERM) left its state, kill switch included, and cannot run any more.
  echo "weft: weft-helper was not running and left network state behind (kill switch, routes):" >&2
  echo "weft: see /var/lib/weft-helper/owned.json; 'nft list tables' and 'ip rule' show what remains" >&2
else
  rm -rf /var/lib/weft-helper
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
