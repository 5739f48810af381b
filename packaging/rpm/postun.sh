# %postun of trulayer-server ($1: 0 = erase, 1+ = upgrade): on upgrade,
# restart a running service onto the new binary; on erase, keep the data.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    if [ "$1" -ge 1 ]; then
        systemctl try-restart trulayer-server.service >/dev/null 2>&1 || true
    fi
fi
if [ "$1" -eq 0 ]; then
    echo "trulayer-server: removed. The data in /var/lib/trulayer, the account trulayer"
    echo "  and a changed /etc/trulayer/trulayer.toml (as .rpmsave) are kept."
fi
exit 0
