#!/bin/sh
# deb/rpm post-install: the `weft` group guards the helper's socket; the person installing joins it.
set -e
if ! getent group weft >/dev/null; then
  groupadd --system weft
fi
if [ -n "${SUDO_USER:-}" ] && [ "${SUDO_USER}" != root ]; then
  usermod -a -G weft "${SUDO_USER}" || true
fi
install -D -m 0644 /opt/Weft/resources/packaging/weft-helper.service /usr/lib/systemd/system/weft-helper.service
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --now weft-helper.service || echo "weft: could not start weft-helper.service; see journalctl -u weft-helper" >&2
fi
