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
# /run/weft for the engine's socket: 1770 root:weft, made now and at every boot.
install -D -m 0644 /opt/Weft/resources/packaging/weft-tmpfiles.conf /usr/lib/tmpfiles.d/weft.conf
if command -v systemd-tmpfiles >/dev/null 2>&1; then
  systemd-tmpfiles --create /usr/lib/tmpfiles.d/weft.conf || true
else
  install -d -m 1770 -o root -g weft /run/weft
fi
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable weft-helper.service
  # An upgrade restarts the running helper (SIGTERM: the kill switch stays; the new one takes over).
  systemctl restart weft-helper.service || echo "weft: could not start weft-helper.service; see journalctl -u weft-helper" >&2
fi
