# %preun of trulayer-server ($1: 0 = erase, 1+ = upgrade): on erase, stop
# and disable the service. An upgrade leaves it running (see %postun).
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable --now trulayer-server.service >/dev/null 2>&1 || true
fi
exit 0
