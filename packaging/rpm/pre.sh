# %pre of trulayer-server: the trulayer account must exist before the files
# are laid down, as /etc/trulayer/trulayer.toml belongs to its group.
if ! getent passwd trulayer >/dev/null; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
        echo 'u trulayer - "TruLayer Server" /var/lib/trulayer' |
            systemd-sysusers --replace=/usr/lib/sysusers.d/trulayer.conf -
    fi
fi
if ! getent passwd trulayer >/dev/null; then
    getent group trulayer >/dev/null || groupadd --system trulayer
    useradd --system --gid trulayer --home-dir /var/lib/trulayer --no-create-home \
        --shell /sbin/nologin --comment "TruLayer Server" trulayer
fi
exit 0
