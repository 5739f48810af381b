# %post of trulayer-server ($1: 1 = install, 2+ = upgrade): directories, then
# enable (never start) the service at the first installation; the operator
# must install a TLS certificate first.
if command -v systemd-tmpfiles >/dev/null 2>&1; then
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/trulayer.conf || true
fi
[ -d /etc/trulayer/tls ] || install -d -m 0750 -o root -g trulayer /etc/trulayer/tls
[ -d /var/lib/trulayer ] || install -d -m 0750 -o trulayer -g trulayer /var/lib/trulayer
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" -eq 1 ]; then
    if command -v systemctl >/dev/null 2>&1; then
        systemctl --no-reload enable trulayer-server.service >/dev/null 2>&1 || true
    fi
    echo "trulayer-server: enabled, not started. Put a TLS certificate and key in"
    echo "  /etc/trulayer/tls/ (see /etc/trulayer/trulayer.toml), then: systemctl start trulayer-server"
fi
exit 0
