#!/usr/bin/env bash
# The packages under a real systemd (run by packaging/check.sh, as root):
#
#   packaging/systemd-check.sh DEB NEWER_DEB [RPM NEWER_RPM]
#
# Boots a minimal Debian whose PID 1 is systemd in systemd-nspawn and, in it,
# takes each package through install -> start (Type=notify) -> ingest over
# HTTPS -> reload (a new certificate; and a broken file, which must be
# refused) -> restart -> stop -> upgrade to the newer build -> purge (or
# rpm -e). Any failed systemctl job, a unit left failed, a failure systemd
# logged for the service, or a first-start secret in the journal fails it.
#
# The root comes from debootstrap --variant=minbase (Debian's archive, the
# mirror the host's apt uses) and is kept under
# $CARGO_TARGET_DIR/systemd-root/, keyed on the suite and package list, so
# later runs boot at once. Each boot runs on a throwaway overlay
# (--volatile=overlay) with no network but its own loopback
# (--private-network), so the kept root stays clean and the server's port
# cannot collide with anything on the host.
#
# The .rpm goes through the same steps, installed by Debian's rpm: no
# RPM-based root can be made from the package registries reachable here,
# but this runs its scriptlets (%pre, %post, %preun, %postun) against a
# real systemd.
set -euo pipefail
cd "$(dirname "$0")/.."

(($# == 2 || $# == 4)) || { echo "usage: $0 DEB NEWER_DEB [RPM NEWER_RPM]" >&2; exit 2; }
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$PWD/$TARGET_DIR ;; esac

SUITE=bookworm
# systemd as PID 1, curl for the HTTPS requests, rpm for the .rpm pass.
INCLUDE=systemd,curl,rpm
UNIT=trulayer-server.service
CONF=/etc/trulayer/trulayer.toml
CREDENTIALS=/var/lib/trulayer/initial-credentials
URL=https://localhost:8443
# Upper bounds, never waited out on success.
BOOT_LIMIT_S=60
RUN_LIMIT_S=900

step() { printf '\n== %s\n' "$*"; }
ok() { printf '  ok: %s\n' "$*"; }
fail() { printf '  FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root: it boots a container"

step "tools"
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
command -v nsenter >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
    echo "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
ok "$(systemd-nspawn --version | head -n 1), debootstrap $(dpkg-query -W -f='${Version}' debootstrap)"

WORK=$(mktemp -d /tmp/trulayer-systemd-check.XXXXXX)
chmod 0755 "$WORK"
NSPAWN_PID=
LEADER=
MOUNTED_NSPAWN_RUN=

# Powers the container off (nspawn passes SIGTERM on as a halt request),
# killing it if it does not stop in time.
stop_container() {
    [ -n "$NSPAWN_PID" ] || return 0
    kill -TERM "$NSPAWN_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$NSPAWN_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then
        echo "  the container did not power off within 30 s: killing it" >&2
        kill -KILL "$NSPAWN_PID" 2>/dev/null || true
    fi
    wait "$NSPAWN_PID" 2>/dev/null || true
    NSPAWN_PID='' LEADER=''
}

cleanup() {
    local rc=$?
    set +e
    if [ "$rc" != 0 ] && [ -n "$LEADER" ]; then
        echo "--- the service's journal in the container:" >&2
        inside journalctl --no-pager -o short-monotonic -u "$UNIT" 2>&1 | tail -n 60 >&2
        echo "--- failed units:" >&2
        inside systemctl --failed --no-pager >&2
    fi
    stop_container
    if [ "$rc" != 0 ] && [ -f "$WORK/console.log" ]; then
        echo "--- the container's console (last lines):" >&2
        tail -n 30 "$WORK/console.log" >&2
    fi
    [ -z "$MOUNTED_NSPAWN_RUN" ] || umount /run/systemd/nspawn
    rm -rf "$WORK"
}
trap cleanup EXIT

step "a minimal Debian $SUITE root with systemd (debootstrap --variant=minbase)"
# The mirror the host's apt uses for the suite; debootstrap's own otherwise.
MIRROR=$(apt-cache policy 2>/dev/null | awk -v s="$SUITE/main" '$3 == s && $2 ~ /^https?:/ {print $2; exit}')
KEY=$(printf '%s\n' "$SUITE" minbase "$INCLUDE" | sha256sum | cut -c1-12)
CACHE=$TARGET_DIR/systemd-root
ROOT=$CACHE/$SUITE-$KEY
if [ -x "$ROOT/usr/lib/systemd/systemd" ]; then
    ok "kept from an earlier run: $ROOT"
else
    rm -rf "$ROOT.partial"
    mkdir -p "$CACHE"
    started=$SECONDS
    if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOT.partial" ${MIRROR:+"$MIRROR"} \
        >"$WORK/debootstrap.log" 2>&1; then
        tail -n 30 "$WORK/debootstrap.log" >&2
        fail "debootstrap"
    fi
    # Older roots (another suite or package list) are not reused.
    find "$CACHE" -mindepth 1 -maxdepth 1 ! -name "$(basename "$ROOT").partial" -exec rm -rf {} +
    mv "$ROOT.partial" "$ROOT"
    ok "debootstrap took $((SECONDS - started)) s; $(du -sh "$ROOT" | cut -f1) in $ROOT"
fi
[ ! -e "$ROOT/bin/kill" ] || fail "the root has /bin/kill (procps): it must not, to show reload needs no kill(1)"
ok "no /bin/kill in the root (no procps)"

mkdir -p "$WORK/packages"
cp "$1" "$WORK/packages/old.deb"
cp "$2" "$WORK/packages/new.deb"
if (($# == 4)); then
    cp "$3" "$WORK/packages/old.rpm"
    cp "$4" "$WORK/packages/new.rpm"
fi

# Runs a command inside the booted container, with a clean environment.
inside() {
    nsenter --target "$LEADER" --all -- \
        /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root "$@"
}

boot() { # NAME
    # systemd-nspawn keeps per-container state there, on a tmpfs on a host
    # booted by systemd; where /run is not one (a container or VM whose
    # PID 1 is something else), a tmpfs of its own lets nothing of a killed
    # run outlive it (it is unmounted at the end). On a systemd host it is
    # left alone: other containers' state lives there.
    mkdir -p /run/systemd/nspawn
    if [ "$(stat -f -c %T /run)" != tmpfs ] && ! mountpoint -q /run/systemd/nspawn; then
        mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn
        MOUNTED_NSPAWN_RUN=yes
    fi
    timeout --kill-after=10 "$RUN_LIMIT_S" systemd-nspawn --quiet --boot --register=no --keep-unit \
        --private-network --volatile=overlay --machine="trulayer-$1" \
        --bind-ro="$WORK/packages:/packages" --directory="$ROOT" \
        </dev/null >"$WORK/console.log" 2>&1 &
    NSPAWN_PID=$!
    local started nspawn i state=
    started=$(date +%s%N)
    for ((i = 0; i < BOOT_LIMIT_S * 10; i++)); do
        kill -0 "$NSPAWN_PID" 2>/dev/null || { cat "$WORK/console.log" >&2; fail "systemd-nspawn exited"; }
        nspawn=$(pgrep -P "$NSPAWN_PID" -x systemd-nspawn || true)
        [ -n "$nspawn" ] && LEADER=$(pgrep -P "$nspawn" | head -n 1 || true)
        if [ -n "$LEADER" ]; then
            state=$(inside systemctl is-system-running 2>/dev/null || true)
            case $state in running | degraded) break ;; esac
        fi
        sleep 0.1
    done
    [ -n "$LEADER" ] || fail "no container after ${BOOT_LIMIT_S} s"
    [ "$(inside cat /proc/1/comm)" = systemd ] || fail "PID 1 in the container is not systemd"
    [ "$state" = running ] || fail "the container's boot ended $state: $(inside systemctl --failed --no-legend --plain)"
    ok "booted $(inside systemctl --version | head -n 1) as PID 1 in $((($(date +%s%N) - started) / 1000000)) ms: system running, no failed unit"
}

# systemctl in the container: the job must succeed.
job() {
    inside systemctl "$@" || fail "systemctl $* failed"
}
main_pid() { inside systemctl show -P MainPID "$UNIT"; }
expect_state() { # ACTIVE-STATE
    local state
    state=$(inside systemctl show -P ActiveState "$UNIT")
    [ "$state" = "$1" ] || fail "$UNIT is $state, not $1"
    [ "$(inside systemctl show -P Result "$UNIT")" = success ] ||
        fail "$UNIT result: $(inside systemctl show -P Result "$UNIT")"
    local failed
    failed=$(inside systemctl --failed --no-legend --plain)
    [ -z "$failed" ] || fail "failed units: $failed"
}
curl_in() { # CACERT PATH [curl args...]
    local cacert=$1 path=$2
    shift 2
    inside curl -fsS --max-time 20 --cacert "$cacert" -H "Authorization: Bearer $API_KEY" "$@" "$URL$path"
}
# Trace $TRACE_ID is there.
expect_trace() { # CACERT
    local trace
    trace=$(curl_in "$1" "/v1/traces/$TRACE_ID") || fail "GET /v1/traces/$TRACE_ID"
    grep -q systemd-check <<<"$trace" || fail "trace $TRACE_ID: $trace"
}
journal() { inside journalctl --no-pager -o cat -u "$UNIT"; }

# One package through its life under systemd. KIND is deb or rpm.
exercise() {
    local kind=$1 install upgrade remove version
    case $kind in
    deb)
        version=(dpkg-query -W -f='${Version}' trulayer-server)
        install=(dpkg -i /packages/old.deb)
        upgrade=(dpkg -i /packages/new.deb)
        remove=(dpkg --purge trulayer-server)
        ;;
    rpm)
        version=(rpm -q trulayer-server)
        # Debian's rpm: --force-debian to install at all, --nodeps as
        # nothing in its database provides /bin/sh.
        install=(rpm -i --nodeps --force-debian /packages/old.rpm)
        upgrade=(rpm -U --nodeps --force-debian /packages/new.rpm)
        remove=(rpm -e --nodeps trulayer-server)
        ;;
    esac

    step "$kind: boot"
    boot "$kind"

    step "$kind: install (${install[*]})"
    inside "${install[@]}" </dev/null || fail "${install[*]}"
    [ "$(inside systemctl is-enabled "$UNIT")" = enabled ] || fail "not enabled"
    expect_state inactive
    ok "installed: $UNIT enabled, not started"

    step "$kind: start (Type=notify)"
    inside trulayer-server tls self-signed --out-dir /etc/trulayer/tls --hosts localhost,127.0.0.1 >/dev/null
    inside chown root:trulayer /etc/trulayer/tls/cert.pem /etc/trulayer/tls/key.pem
    inside chmod 0640 /etc/trulayer/tls/cert.pem /etc/trulayer/tls/key.pem
    job start "$UNIT"
    expect_state active
    local pid
    pid=$(main_pid)
    [ "$(inside stat -c %U "/proc/$pid")" = trulayer ] || fail "the server does not run as trulayer"
    ok "systemctl start returned after READY=1: active, main PID $pid, user trulayer"

    step "$kind: first start's credentials: in the file, not in the journal"
    local creds password
    creds=$(inside cat "$CREDENTIALS") || fail "no $CREDENTIALS"
    API_KEY=$(sed -n 's/^api_key = "\(.*\)"$/\1/p' <<<"$creds")
    password=$(sed -n 's/^admin_password = "\(.*\)"$/\1/p' <<<"$creds")
    [ -n "$API_KEY" ] && [ -n "$password" ] || fail "no api_key or admin_password in $CREDENTIALS"
    inside journalctl --sync
    local log
    log=$(inside journalctl --no-pager -o cat)
    ! grep -qF "${API_KEY#tl_}" <<<"$log" || fail "the API key is in the journal"
    ! grep -qF "$password" <<<"$log" || fail "the admin password is in the journal"
    grep -qF "$CREDENTIALS" <<<"$log" || fail "the journal does not name $CREDENTIALS"
    ok "the journal names $CREDENTIALS and holds neither the API key nor the password"

    step "$kind: ingest over HTTPS"
    local ingest
    ingest=$(curl_in /etc/trulayer/tls/cert.pem /v1/ingest -H 'Content-Type: application/json' \
        -d '{"name":"systemd-check","input":"hi","output":"hello","spans":[{"name":"llm","type":"llm","model":"gpt-4o","prompt_tokens":3,"completion_tokens":5}]}') ||
        fail "ingest over HTTPS"
    TRACE_ID=$(sed -n 's/.*"id":"\([^"]*\)".*/\1/p' <<<"$ingest")
    [ -n "$TRACE_ID" ] || fail "ingest answered: $ingest"
    expect_trace /etc/trulayer/tls/cert.pem
    ok "ingested and read back trace $TRACE_ID (certificate verified)"

    step "$kind: reload (systemctl reload: a new certificate)"
    inside trulayer-server tls self-signed --out-dir /etc/trulayer/tls/new --hosts localhost,127.0.0.1 >/dev/null
    inside cp /etc/trulayer/tls/new/cert.pem /etc/trulayer/tls/new/key.pem /etc/trulayer/tls/
    inside cp /etc/trulayer/tls/new/cert.pem /root/new-cert.pem
    job reload "$UNIT"
    expect_state active
    [ "$(main_pid)" = "$pid" ] || fail "the reload replaced the process"
    journal | grep -q '"reloaded"' || fail "the journal shows no reload"
    expect_trace /root/new-cert.pem
    ok "reloaded in place (PID $pid): the new certificate is served, the journal says reloaded"

    step "$kind: reload of a broken file is refused, the server keeps running"
    inside cp "$CONF" /root/trulayer.toml.good
    inside sh -c "printf '[server]\nlisten = \"nowhere\"\n' >>$CONF"
    if inside systemctl reload "$UNIT" 2>"$WORK/refused"; then
        fail "systemctl reload accepted a broken configuration"
    fi
    expect_state active
    [ "$(main_pid)" = "$pid" ] || fail "the refused reload replaced the process"
    journal | grep -q 'not reloaded' || fail "the journal does not say why the reload was refused"
    ! journal | grep -q 'reload refused' || fail "the server was signalled with a broken configuration"
    expect_trace /root/new-cert.pem
    inside cp /root/trulayer.toml.good "$CONF"
    ok "systemctl reload failed ($(tr '\n' ' ' <"$WORK/refused")); still active and serving"

    step "$kind: restart"
    job restart "$UNIT"
    expect_state active
    [ "$(main_pid)" != "$pid" ] || fail "systemctl restart kept the process"
    pid=$(main_pid)
    expect_trace /root/new-cert.pem
    ok "restarted: main PID $pid, the trace is kept"

    step "$kind: stop"
    job stop "$UNIT"
    expect_state inactive
    [ "$(inside systemctl show -P ExecMainStatus "$UNIT")" = 0 ] || fail "exit status $(inside systemctl show -P ExecMainStatus "$UNIT")"
    ok "stopped: inactive, exit status 0"

    step "$kind: upgrade (${upgrade[*]}) while running"
    job start "$UNIT"
    pid=$(main_pid)
    local before
    before=$(inside "${version[@]}")
    inside "${upgrade[@]}" </dev/null || fail "${upgrade[*]}"
    expect_state active
    [ "$(main_pid)" != "$pid" ] || fail "the upgrade did not restart the running service"
    pid=$(main_pid)
    expect_trace /root/new-cert.pem
    [ "$(inside systemctl is-enabled "$UNIT")" = enabled ] || fail "not enabled after the upgrade"
    ok "upgraded $before -> $(inside "${version[@]}"): restarted onto the new binary (PID $pid), still enabled, the trace is kept"

    step "$kind: remove (${remove[*]})"
    inside "${remove[@]}" </dev/null || fail "${remove[*]}"
    [ "$(inside systemctl show -P LoadState "$UNIT")" = not-found ] || fail "the unit is still loaded"
    [ "$(inside systemctl show -P ActiveState "$UNIT")" = inactive ] || fail "still running after removal"
    # No procps in the root: the processes' names straight from /proc.
    ! inside sh -c 'cat /proc/[0-9]*/comm 2>/dev/null' | grep -qx trulayer-server || fail "a trulayer-server process is left"
    ! inside test -e /usr/bin/trulayer-server || fail "the binary is left"
    inside test -f /var/lib/trulayer/trulayer.db || fail "the data was deleted"
    if [ "$kind" = deb ]; then
        ! inside test -e /etc/trulayer || fail "/etc/trulayer left after the purge"
    fi
    local failed
    failed=$(inside systemctl --failed --no-legend --plain)
    [ -z "$failed" ] || fail "failed units: $failed"
    ok "stopped, unit gone, binary gone, data kept"

    step "$kind: nothing failed in the journal"
    local bad
    bad=$(journal | grep -E 'Failed with result|Failed to start|Failed to locate executable|status=203|Main process exited, code=(killed|dumped)|Start request repeated' || true)
    [ -z "$bad" ] || fail "systemd logged failures: $bad"
    ok "no failed start, exec failure, crash or failed result logged for $UNIT"

    stop_container
    ok "the container powered off"
}

exercise deb
if (($# == 4)); then exercise rpm; fi
printf '\nsystemd check: PASSED in %s s\n' "$SECONDS"
