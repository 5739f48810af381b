#!/usr/bin/env bash
# The packaging check (run by .ci/run, as root):
#
#   packaging/check.sh
#
# 1. builds the static binary, the .deb and the .rpm (packaging/build.sh);
# 2. checks their contents and metadata (dpkg-deb -c/-I, rpm -qpl/-qpc/--scripts);
# 3. installs the .deb on this machine and checks the account, the modes,
#    the service enabled but not started, the unit (systemd-analyze verify
#    with nothing on stderr, systemd-analyze security at the "OK" level);
# 4. runs the installed binary as trulayer with the installed configuration
#    and a test certificate, ingests a trace over HTTPS, reloads
#    (trulayer-server reload, as ExecReload= does), stops it (SIGTERM);
# 5. upgrades to a newer build of the package and checks that an edit to
#    the configuration and the data survived;
# 6. purges, and checks that /etc/trulayer is gone and /var/lib/trulayer is not;
# 7. boots a minimal Debian with systemd as PID 1 and takes the .deb and the
#    .rpm through install, start, ingest, reload, restart, stop, upgrade and
#    removal under it (packaging/systemd-check.sh).
#
# Steps 3 to 6 change this machine (package trulayer-server, account trulayer,
# /etc/trulayer, /var/lib/trulayer) and undo all of it at the end, also on
# failure, so it can run again. It refuses to start where trulayer-server is
# in use by something else than an earlier run of this check.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TARGET=x86_64-unknown-linux-gnu
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
export CARGO_TARGET_DIR=$TARGET_DIR
CONF=/etc/trulayer/trulayer.toml
DATA=/var/lib/trulayer
UNIT=trulayer-server.service
# Written before this check changes anything, removed when it has undone it all.
MARKER=/var/tmp/trulayer-packaging-check.owned
# Exposure at most 4.9 out of 10: systemd-analyze's "OK" level or better.
SECURITY_THRESHOLD=49

step() { printf '\n== %s\n' "$*"; }
ok() { printf '  ok: %s\n' "$*"; }
skip() { printf '  SKIPPED: %s\n' "$*"; }
fail() { printf '  FAIL: %s\n' "$*" >&2; exit 1; }
# expect DESCRIPTION COMMAND...: the command must succeed.
expect() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}
has_line() { grep -qE -- "$1" <<<"$2"; }

[ "$(id -u)" = 0 ] || fail "run as root: it installs and purges the package"

WORK=$(mktemp -d /tmp/trulayer-check.XXXXXX)
RUNUSER_PID=
SERVER_PID=

# Waits up to $2 seconds for process $1 to end; false if it still runs.
gone_within() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# Stops the server this script started, if any (SIGTERM, then SIGKILL).
stop_server() {
    if [ -z "$SERVER_PID" ] && [ -n "$RUNUSER_PID" ]; then
        SERVER_PID=$(pgrep -P "$RUNUSER_PID" || true)
    fi
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        gone_within "$SERVER_PID" 30 || kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -n "$RUNUSER_PID" ]; then
        gone_within "$RUNUSER_PID" 5 || kill -KILL "$RUNUSER_PID" 2>/dev/null || true
        wait "$RUNUSER_PID" 2>/dev/null || true
    fi
    RUNUSER_PID='' SERVER_PID=''
}

undo_install() {
    dpkg --purge trulayer-server >/dev/null 2>&1 || true
    rm -rf /etc/trulayer "$DATA"
    if getent passwd trulayer >/dev/null; then userdel trulayer || true; fi
    if getent group trulayer >/dev/null; then groupdel trulayer || true; fi
    rm -f "$MARKER"
}

cleanup() {
    local rc=$?
    set +e
    stop_server
    if [ -e "$MARKER" ]; then undo_install; fi
    rm -rf "$WORK"
    if [ "$rc" = 0 ]; then
        printf '\npackaging check: PASSED\n'
    else
        printf '\npackaging check: FAILED (exit %s)\n' "$rc" >&2
    fi
}
trap cleanup EXIT

step "nothing of trulayer-server on this machine but an earlier run's leftovers"
if [ -e "$MARKER" ]; then
    echo "  an earlier run did not finish: undoing what it installed"
    undo_install
fi
installed=$(dpkg-query -W -f='${Status}' trulayer-server 2>/dev/null || true)
case $installed in
"" | *not-installed) ;;
*) fail "package trulayer-server is on this machine ($installed); this check would purge it: remove it first" ;;
esac
for path in /etc/trulayer "$DATA" /usr/bin/trulayer-server; do
    [ ! -e "$path" ] || fail "$path exists; this check would delete it: remove it first"
done
! getent passwd trulayer >/dev/null || fail "the account trulayer exists; this check would delete it: remove it first"
! pgrep -f '^/usr/bin/trulayer-server' >/dev/null || fail "a /usr/bin/trulayer-server process runs"
ok "clean"

step "build (packaging/build.sh)"
packaging/build.sh
BIN=$TARGET_DIR/$TARGET/release/trulayer-server
DEB=$(ls "$TARGET_DIR/$TARGET"/debian/trulayer-server_*_amd64.deb)
RPM=$(ls "$TARGET_DIR/$TARGET"/generate-rpm/trulayer-server-*.x86_64.rpm)
VERSION=$(dpkg-deb -f "$DEB" Version)

step "newer builds of both packages, for the upgrades"
NEW_VERSION=$VERSION+check1
mkdir "$WORK/upgrade"
cargo deb --no-build --no-strip --locked --target "$TARGET" --deb-version "$NEW_VERSION" --output "$WORK/upgrade/" >/dev/null
NEW_DEB=$(ls "$WORK/upgrade"/trulayer-server_*.deb)
dpkg --compare-versions "$NEW_VERSION" gt "$VERSION" || fail "$NEW_VERSION is not newer than $VERSION"
ok "$NEW_DEB"
cargo generate-rpm --target "$TARGET" --set-metadata 'release = "2"' --output "$WORK/upgrade/" >/dev/null
NEW_RPM=$(ls "$WORK/upgrade"/trulayer-server-*.rpm)
[ "$(rpm -qp --qf '%{RELEASE}' "$NEW_RPM")" = 2 ] || fail "$NEW_RPM is not release 2"
ok "$NEW_RPM"

step "the .deb: metadata (dpkg-deb -I)"
info=$(dpkg-deb -I "$DEB")
printf '%s\n' "$info"
[ "$(dpkg-deb -f "$DEB" Package)" = trulayer-server ] || fail "package name"
ok "Package: trulayer-server, Version: $VERSION"
[ "$(dpkg-deb -f "$DEB" Architecture)" = amd64 ] || fail "architecture"
ok "Architecture: amd64"
depends=$(dpkg-deb -f "$DEB" Depends Pre-Depends)
! has_line 'libc6|libgcc|libssl|libsqlite' "$depends" || fail "depends on shared libraries: $depends"
ok "no dependency on glibc or other libraries (Depends: '${depends}')"
for field in Maintainer Section Priority Description; do
    [ -n "$(dpkg-deb -f "$DEB" "$field")" ] || fail "no $field"
done
ok "Maintainer, Section, Priority and Description set"
conffiles=$(dpkg-deb -I "$DEB" conffiles)
[ "$conffiles" = /etc/trulayer/trulayer.toml ] || fail "conffiles: '$conffiles'"
ok "conffiles: /etc/trulayer/trulayer.toml"
for script in postinst prerm postrm; do
    dpkg-deb -I "$DEB" "$script" >"$WORK/$script"
    cmp -s "$WORK/$script" "packaging/debian/$script" || fail "$script differs from packaging/debian/$script"
done
ok "maintainer scripts postinst, prerm, postrm are packaging/debian/'s"
# Never a start at install: no command line (echo aside) starts the unit.
if grep -vE '^\s*echo' "$WORK/postinst" | grep -qE '(systemctl|deb-systemd-invoke)( --?[a-z-]+)* (start|restart|reload-or-restart) '; then
    fail "postinst starts the service"
fi
ok "postinst enables, never starts (try-restart on upgrade only)"

step "the .deb: contents (dpkg-deb -c)"
contents=$(dpkg-deb -c "$DEB")
printf '%s\n' "$contents"
for want in \
    "-rwxr-xr-x /usr/bin/trulayer-server" \
    "-rw-r----- /etc/trulayer/trulayer.toml" \
    "-rw-r--r-- /lib/systemd/system/$UNIT" \
    "-rw-r--r-- /usr/lib/sysusers.d/trulayer.conf" \
    "-rw-r--r-- /usr/lib/tmpfiles.d/trulayer.conf" \
    "-rw-r--r-- /usr/share/doc/trulayer-server/README.md" \
    "-rw-r--r-- /usr/share/doc/trulayer-server/copyright"; do
    mode=${want%% *} path=${want#* }
    has_line "^$mode (root/root|0/0) .* \\.${path//./\\.}\$" "$contents" || fail "dpkg-deb -c: no $path, $mode root:root"
    ok "$mode root:root $path"
done
mkdir "$WORK/deb"
dpkg-deb -x "$DEB" "$WORK/deb"
cmp -s "$WORK/deb/usr/bin/trulayer-server" "$BIN" || fail "the packaged binary is not the one built"
cmp -s "$WORK/deb/etc/trulayer/trulayer.toml" packaging/trulayer.toml || fail "config differs"
cmp -s "$WORK/deb/lib/systemd/system/$UNIT" "systemd/$UNIT" || fail "unit differs"
ok "binary, config and unit are the built and committed ones"
file "$WORK/deb/usr/bin/trulayer-server" | grep -qE 'statically linked|static-pie linked' || fail "packaged binary not static"
ok "the packaged binary is static"

step "the .rpm (rpm -qpi, -qpl, -qpc, --scripts)"
rpm -qpi "$RPM"
rpm_files=$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM")
printf '%s\n' "$rpm_files"
rpm_list=$(rpm -qpl "$RPM")
for want in /usr/bin/trulayer-server /etc/trulayer/trulayer.toml /usr/lib/systemd/system/$UNIT \
    /usr/lib/sysusers.d/trulayer.conf /usr/lib/tmpfiles.d/trulayer.conf /usr/share/doc/trulayer-server/README.md; do
    grep -qxF "$want" <<<"$rpm_list" || fail "rpm -qpl: no $want"
done
ok "rpm -qpl lists binary, config, unit, sysusers, tmpfiles, README"
has_line '^-rwxr-xr-x root:root +/usr/bin/trulayer-server$' "$rpm_files" || fail "binary mode"
has_line '^-rw-r----- root:trulayer cn /etc/trulayer/trulayer\.toml$' "$rpm_files" || fail "config: mode, owner or %config(noreplace)"
ok "binary 0755 root:root; config 0640 root:trulayer %config(noreplace)"
[ "$(rpm -qpc "$RPM")" = /etc/trulayer/trulayer.toml ] || fail "rpm -qpc: $(rpm -qpc "$RPM")"
ok "rpm -qpc: /etc/trulayer/trulayer.toml"
requires=$(rpm -qpR "$RPM")
! has_line 'libc\.so|GLIBC|libgcc' "$requires" || fail "requires shared libraries: $requires"
ok "no shared-library requirement ($(tr '\n' ' ' <<<"$requires"))"
scripts=$(rpm -qp --scripts "$RPM")
for want in '^preinstall scriptlet' 'useradd --system' '^postinstall scriptlet' 'systemctl --no-reload enable trulayer-server' \
    '^preuninstall scriptlet' 'disable --now' '^postuninstall scriptlet' 'try-restart'; do
    has_line "$want" "$scripts" || fail "rpm scripts: nothing like '$want'"
done
! has_line 'systemctl (--[a-z-]+ )*start ' "$(grep -v echo <<<"$scripts")" || fail "rpm scripts start the service"
ok "scriptlets: account in %pre, enable (not start) in %post, stop on erase, try-restart on upgrade"

step "install the .deb (dpkg -i)"
touch "$MARKER"
dpkg -i "$DEB" </dev/null
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' trulayer-server)" = "ii " ] || fail "not installed"
ok "installed $VERSION"
pw=$(getent passwd trulayer) || fail "no account trulayer"
IFS=: read -r _ _ uid _ _ home shell <<<"$pw"
[ "$home" = "$DATA" ] || fail "home of trulayer: $home"
case $shell in */nologin | */false) ;; *) fail "trulayer has a login shell: $shell" ;; esac
[ "$uid" -lt 1000 ] || fail "trulayer is not a system account (uid $uid)"
getent group trulayer >/dev/null || fail "no group trulayer"
ok "system account trulayer (uid $uid), home $home, shell $shell, group trulayer"
mode_is() { # PATH "MODE OWNER:GROUP"
    local got
    got=$(stat -c '%a %U:%G' "$1")
    [ "$got" = "$2" ] || fail "$1 is $got, expected $2"
    ok "$1 $2"
}
mode_is "$CONF" "640 root:trulayer"
mode_is /etc/trulayer/tls "750 root:trulayer"
mode_is "$DATA" "750 trulayer:trulayer"
mode_is /usr/bin/trulayer-server "755 root:root"
[ "$(dpkg-query -W -f='${Conffiles}' trulayer-server | awk 'NF {print $1}')" = "$CONF" ] || fail "conffile not registered"
ok "dpkg registered $CONF as a conffile"

if [ -d /run/systemd/system ]; then
    [ "$(systemctl is-enabled "$UNIT")" = enabled ] || fail "$UNIT is not enabled"
    ok "$UNIT enabled"
    ! systemctl is-active --quiet "$UNIT" || fail "$UNIT was started by the installation"
    ok "$UNIT not started"
else
    skip "systemd is not PID 1 here ($(ps -o comm= -p 1)): systemctl cannot report enabled/active; checking the enablement symlink and the processes instead"
    [ -L "/etc/systemd/system/multi-user.target.wants/$UNIT" ] || fail "no multi-user.target.wants/$UNIT symlink: not enabled"
    ok "enabled: /etc/systemd/system/multi-user.target.wants/$UNIT -> $(readlink "/etc/systemd/system/multi-user.target.wants/$UNIT")"
    ! pgrep -f '^/usr/bin/trulayer-server' >/dev/null || fail "the installation started trulayer-server"
    ok "not started: no /usr/bin/trulayer-server process"
fi

step "the unit: systemd-analyze verify (nothing on stderr)"
verify_err=$(systemd-analyze verify "/lib/systemd/system/$UNIT" 2>&1 >/dev/null) || fail "systemd-analyze verify failed: $verify_err"
[ -z "$verify_err" ] || fail "systemd-analyze verify warns: $verify_err"
ok "systemd-analyze verify: no warning"
step "the unit: systemd-analyze security --offline=true --threshold=$SECURITY_THRESHOLD"
security=$(systemd-analyze security --offline=true --threshold="$SECURITY_THRESHOLD" "systemd/$UNIT" 2>&1) ||
    fail "exposure above $SECURITY_THRESHOLD: $(grep Overall <<<"$security")"
grep '✗' <<<"$security" || true
ok "$(grep -o 'Overall exposure.*' <<<"$security")"

step "run the installed binary as trulayer with the installed configuration"
check_config_out=$(runuser -u trulayer -- /usr/bin/trulayer-server check-config --config "$CONF" 2>&1) &&
    fail "check-config passed without TLS files: $check_config_out"
ok "without a certificate check-config refuses to start: $check_config_out"
/usr/bin/trulayer-server tls self-signed --out-dir /etc/trulayer/tls --hosts localhost,127.0.0.1
chown root:trulayer /etc/trulayer/tls/cert.pem /etc/trulayer/tls/key.pem
chmod 0640 /etc/trulayer/tls/key.pem
chmod 0644 /etc/trulayer/tls/cert.pem
runuser -u trulayer -- /usr/bin/trulayer-server check-config --config "$CONF"
ok "test certificate in /etc/trulayer/tls; check-config as trulayer passes"

free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    fail "no free port"
}
PORT=$(free_port)
LISTEN=127.0.0.1:$PORT
URL=https://127.0.0.1:$PORT
as_trulayer() { runuser -u trulayer -- env TRULAYER_SERVER__LISTEN="$LISTEN" "$@"; }

start_server() { # LOG [strace]: with "strace", every system call goes to $WORK/strace/
    local tracer=()
    [ "${2:-}" = strace ] && tracer=(strace -f -qq -o "$WORK/strace/serve")
    # runuser itself in the background (not a function: $! must be its pid);
    # it forks the server (or strace, then the server) as trulayer and waits.
    runuser -u trulayer -- env TRULAYER_SERVER__LISTEN="$LISTEN" \
        "${tracer[@]}" /usr/bin/trulayer-server serve --config "$CONF" >"$1" 2>&1 &
    RUNUSER_PID=$!
    local parent
    for _ in $(seq 100); do
        parent=$RUNUSER_PID
        ((${#tracer[@]})) && parent=$(pgrep -P "$RUNUSER_PID" -x strace || echo none)
        SERVER_PID=$(pgrep -P "$parent" -x trulayer-server || true)
        [ -n "$SERVER_PID" ] && break
        sleep 0.1
    done
    [ -n "$SERVER_PID" ] || { cat "$1"; fail "the server did not start"; }
    [ "$(ps -o user= -p "$SERVER_PID")" = trulayer ] || fail "the server does not run as trulayer"
    for _ in $(seq 120); do
        if as_trulayer /usr/bin/trulayer-server healthcheck --config "$CONF" >/dev/null 2>&1; then
            ok "serving as trulayer on $URL (pid $SERVER_PID): healthcheck passes"
            return
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$1"; fail "the server exited"; }
        sleep 0.5
    done
    cat "$1"
    fail "healthcheck did not pass within 60 s"
}

stop_server_checked() { # LOG
    kill -TERM "$SERVER_PID"
    # server.shutdown_timeout_s is 20 in the packaged configuration.
    gone_within "$SERVER_PID" 30 || { cat "$1"; fail "the server still runs 30 s after SIGTERM"; }
    local rc=0
    wait "$RUNUSER_PID" || rc=$?
    RUNUSER_PID='' SERVER_PID=''
    [ "$rc" = 0 ] || { cat "$1"; fail "the server exited with $rc after SIGTERM"; }
    ok "stopped by SIGTERM, exit 0"
}

curl_api() { # PATH [curl args...]
    local path=$1
    shift
    curl -fsS --max-time 20 --cacert /etc/trulayer/tls/cert.pem -H "Authorization: Bearer $KEY" "$@" "$URL$path"
}

# The unit's sandbox cannot be started here without systemd as PID 1, so the
# first run is traced instead, and what it did is held against the unit's
# SystemCallFilter=, MemoryDenyWriteExecute= and ProcSubset=/ProtectProc=.
STRACE=
if command -v strace >/dev/null || apt-get install -y -qq --no-install-recommends strace >/dev/null 2>&1; then
    install -d -o trulayer -g trulayer "$WORK/strace"
    chmod 0755 "$WORK"
    if runuser -u trulayer -- strace -f -qq -o "$WORK/strace/probe" true 2>/dev/null; then STRACE=strace; fi
fi
[ -n "$STRACE" ] || skip "strace is not usable here: the run is not held against the unit's sandbox"
start_server "$WORK/serve1.log" $STRACE
grep -q '^{.*"level"' "$WORK/serve1.log" || fail "no JSON log line: $(head -n 3 "$WORK/serve1.log")"
ok "logs are JSON lines (log.format = \"json\")"
mode_is "$DATA/initial-credentials" "600 trulayer:trulayer"
KEY=$(sed -n 's/^api_key = "\(.*\)"$/\1/p' "$DATA/initial-credentials")
[ -n "$KEY" ] || fail "no api_key in $DATA/initial-credentials"
ok "first start wrote the API key to $DATA/initial-credentials"
! grep -qF "${KEY#tl_}" "$WORK/serve1.log" || fail "the API key is in the server's output"
grep -qF "$DATA/initial-credentials" "$WORK/serve1.log" || fail "the server's output does not name $DATA/initial-credentials"
ok "the server's output (not a terminal) names the file and holds no API key"
ingest=$(curl_api /v1/ingest -H 'Content-Type: application/json' \
    -d '{"name":"packaging-check","input":"hi","output":"hello","tags":{"env":"packaging"},"spans":[{"name":"llm","type":"llm","model":"gpt-4o","prompt_tokens":3,"completion_tokens":5}]}') ||
    fail "ingest over HTTPS failed"
TRACE_ID=$(sed -n 's/.*"id":"\([^"]*\)".*/\1/p' <<<"$ingest")
[ -n "$TRACE_ID" ] || fail "ingest answered: $ingest"
ok "ingested trace $TRACE_ID over HTTPS (certificate verified against /etc/trulayer/tls/cert.pem)"
trace=$(curl_api "/v1/traces/$TRACE_ID") || fail "GET /v1/traces/$TRACE_ID failed"
grep -q packaging-check <<<"$trace" || fail "trace $TRACE_ID: $trace"
ok "GET /v1/traces/$TRACE_ID"
# What ExecReload= runs, as trulayer (traced with the rest).
reload=(/usr/bin/trulayer-server reload --config "$CONF" --pid "$SERVER_PID")
[ -z "$STRACE" ] || reload=(strace -f -qq -o "$WORK/strace/reload" "${reload[@]}")
runuser -u trulayer -- "${reload[@]}" >/dev/null || fail "trulayer-server reload"
for _ in $(seq 100); do
    grep -q '"reloaded"' "$WORK/serve1.log" && break
    sleep 0.1
done
grep -q '"reloaded"' "$WORK/serve1.log" || fail "the server did not log the reload: $(tail -n 3 "$WORK/serve1.log")"
as_trulayer /usr/bin/trulayer-server healthcheck --config "$CONF" >/dev/null || fail "not ready after the reload"
ok "trulayer-server reload (as ExecReload= runs it): reloaded, still serving"
stop_server_checked "$WORK/serve1.log"
ls -l "$DATA"

if [ -n "$STRACE" ]; then
    step "the first run against the unit's sandbox (strace)"
    # What ExecStartPre= runs, traced too (ExecReload='s was, above).
    runuser -u trulayer -- strace -f -qq -o "$WORK/strace/check-config" \
        /usr/bin/trulayer-server check-config --config "$CONF" >/dev/null
    # Expands a system call group of systemd-analyze syscall-filter.
    expand() {
        local name
        systemd-analyze syscall-filter "$1" | awk 'NR > 1 && NF && $1 !~ /^#/ {print $1}' |
            while read -r name; do
                case $name in @*) expand "$name" ;; *) echo "$name" ;; esac
            done
    }
    # SystemCallFilter=@system-service, then ~@privileged @resources, then
    # setpriority allowed again.
    expand @system-service | sort -u >"$WORK/strace/service"
    { expand @privileged; expand @resources; } | sort -u >"$WORK/strace/denied"
    { comm -23 "$WORK/strace/service" "$WORK/strace/denied"; echo setpriority; } |
        sort -u >"$WORK/strace/allowed"
    # Lines: "PID name(args..." or "PID <... name resumed>...".
    sed -nE 's/^[0-9]+ +(<\.\.\. )?([a-z0-9_]+)[( ].*/\2/p' "$WORK/strace/serve" "$WORK/strace/check-config" "$WORK/strace/reload" |
        grep -vxE 'execve' | sort -u >"$WORK/strace/used"
    outside=$(comm -23 "$WORK/strace/used" "$WORK/strace/allowed")
    [ -z "$outside" ] || fail "system calls the unit's SystemCallFilter= refuses: $(tr '\n' ' ' <<<"$outside")"
    ok "all $(wc -l <"$WORK/strace/used") system calls used are allowed by SystemCallFilter=@system-service ~@privileged @resources, setpriority"
    ! grep -E '(mmap|mprotect|pkey_mprotect)\(.*(PROT_WRITE\|PROT_EXEC|PROT_EXEC\|PROT_WRITE|PROT_READ\|PROT_WRITE\|PROT_EXEC)' \
        "$WORK/strace/serve" || fail "a writable and executable mapping: MemoryDenyWriteExecute= would refuse it"
    ok "no writable+executable memory (MemoryDenyWriteExecute=yes)"
    proc=$( (grep -hoE '"/proc/[^"]*"' "$WORK/strace/serve" "$WORK/strace/check-config" "$WORK/strace/reload" || true) | sort -u | tr '\n' ' ')
    # The allocator (jemalloc) opens /proc/sys/vm/overcommit_memory once at
    # start; under ProcSubset=pid the open fails and it assumes no
    # overcommit, which only makes it decommit freed pages explicitly. The
    # nspawn boot runs the unit with ProcSubset=pid and shows it serving.
    ! grep -oE '"/proc/[^"]*"' "$WORK/strace/serve" "$WORK/strace/check-config" "$WORK/strace/reload" |
        grep -vE '"/proc/(self|thread-self|[0-9]+)(/|")|"/proc/sys/vm/overcommit_memory"' ||
        fail "reads /proc beyond its own process: ProcSubset=pid would hide it"
    ok "/proc: only its own process (ProcSubset=pid, ProtectProc=invisible): ${proc:-none}"
fi

step "upgrade to a newer build of the package (config edits and data kept)"
EDIT="# packaging check: an operator's edit, $(date -u +%FT%TZ)"
printf '%s\n' "$EDIT" >>"$CONF"
conf_before=$(sha256sum "$CONF")
# No --force-conf*: an unchanged packaged conffile must never prompt.
dpkg -i "$NEW_DEB" </dev/null
[ "$(dpkg-query -W -f='${Version}' trulayer-server)" = "$NEW_VERSION" ] || fail "not upgraded"
ok "upgraded $VERSION -> $NEW_VERSION"
[ "$(sha256sum "$CONF")" = "$conf_before" ] || fail "the configuration changed in the upgrade"
grep -qxF "$EDIT" "$CONF" || fail "the edit is gone"
ok "the edited configuration is kept"
mode_is "$CONF" "640 root:trulayer"
mode_is "$DATA" "750 trulayer:trulayer"
[ -f /etc/trulayer/tls/key.pem ] || fail "the TLS key is gone"
ok "the TLS files are kept"
if [ -d /run/systemd/system ]; then
    [ "$(systemctl is-enabled "$UNIT")" = enabled ] || fail "not enabled after the upgrade"
else
    [ -L "/etc/systemd/system/multi-user.target.wants/$UNIT" ] || fail "not enabled after the upgrade"
fi
ok "still enabled"
start_server "$WORK/serve2.log"
trace=$(curl_api "/v1/traces/$TRACE_ID") || fail "trace $TRACE_ID lost in the upgrade"
grep -q packaging-check <<<"$trace" || fail "trace $TRACE_ID: $trace"
listed=$(curl_api "/v1/traces?limit=20") || fail "GET /v1/traces failed"
grep -q "$TRACE_ID" <<<"$listed" || fail "trace $TRACE_ID not listed after the upgrade: $listed"
ok "the trace ingested before the upgrade is listed by /v1/traces, with the same API key"
stop_server_checked "$WORK/serve2.log"

step "purge (dpkg --purge): configuration gone, data kept"
dpkg --purge trulayer-server </dev/null
status=$(dpkg-query -W -f='${Status}' trulayer-server 2>/dev/null || true)
case $status in "" | *not-installed) ;; *) fail "dpkg still has trulayer-server: $status" ;; esac
[ ! -e /usr/bin/trulayer-server ] || fail "binary left behind"
[ ! -e /etc/trulayer ] || fail "/etc/trulayer left behind"
ok "/etc/trulayer and the binary are gone"
[ ! -e "/etc/systemd/system/multi-user.target.wants/$UNIT" ] || fail "enablement symlink left behind"
ok "no enablement left behind"
[ -f "$DATA/trulayer.db" ] || fail "the data in $DATA was deleted"
ok "the data in $DATA is kept: $(cd "$DATA" && echo *)"

step "under a real systemd (packaging/systemd-check.sh)"
packaging/systemd-check.sh "$DEB" "$NEW_DEB" "$RPM" "$NEW_RPM"
