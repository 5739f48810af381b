#!/bin/sh
# Installs what the browser tests need on a clean Debian machine:
# Debian's Chromium (when /usr/bin/chromium is missing) and playwright-core,
# pinned by the committed lock file, into the directory given as $1 (under
# the cargo target dir). Each step is skipped when already done.
#
#   tests/ui/setup.sh <install-dir>
set -eu

dir=${1:?usage: setup.sh <install-dir>}
here=$(cd "$(dirname "$0")" && pwd)

if [ ! -x /usr/bin/chromium ]; then
    export DEBIAN_FRONTEND=noninteractive
    install="apt-get install -y --no-install-recommends chromium"
    if ! $install >&2; then
        apt-get update >&2
        $install >&2
    fi
fi

lock_hash=$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)
marker="$dir/.installed-$lock_hash"
if [ ! -f "$marker" ]; then
    mkdir -p "$dir"
    rm -f "$dir"/.installed-*
    cp "$here/package.json" "$here/package-lock.json" "$dir/"
    # No browser download: the tests drive Debian's Chromium.
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >&2)
    touch "$marker"
fi
