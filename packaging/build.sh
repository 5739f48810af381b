#!/usr/bin/env bash
# Builds the static release binary of trulayer-server and the .deb and .rpm
# packages around it:
#
#   packaging/build.sh
#
# leaves   $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/trulayer-server
#          $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/debian/trulayer-server_<version>-1_amd64.deb
#          $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/generate-rpm/trulayer-server-<version>-1.x86_64.rpm
# (CARGO_TARGET_DIR defaults to target/). Installs what it needs when it is
# missing: cargo-deb and cargo-generate-rpm from crates.io (pinned), and
# Debian's rpm, systemd, file, binutils and qemu-user (for running the binary
# on a CPU without AVX). The package metadata lives in Cargo.toml
# ([package.metadata.deb], [package.metadata.generate-rpm]).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$PWD/$TARGET_DIR ;; esac
export CARGO_TARGET_DIR=$TARGET_DIR
BIN=$TARGET_DIR/$TARGET/release/trulayer-server

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

step "tools"
missing=()
command -v rpm >/dev/null || missing+=(rpm)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v file >/dev/null || missing+=(file)
command -v objdump >/dev/null || missing+=(binutils)
command -v qemu-x86_64 >/dev/null || missing+=(qemu-user)
if ((${#missing[@]})); then
    echo "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# A cargo subcommand is installed when `cargo <name> --version` prints the pinned version.
need_crate() { # crate subcommand version
    if ! cargo "$2" --version 2>/dev/null | grep -qF "$3"; then
        echo "cargo install --locked $1@$3"
        # Its own target directory, so the project's build cache stays as it is.
        CARGO_TARGET_DIR=$TARGET_DIR/cargo-install cargo install --locked --quiet "$1" --version "$3"
    fi
}
need_crate cargo-deb deb "$CARGO_DEB_VERSION"
need_crate cargo-generate-rpm generate-rpm "$CARGO_GENERATE_RPM_VERSION"
cargo deb --version
cargo generate-rpm --version
rustup target list --installed 2>/dev/null | grep -qx "$TARGET" || rustup target add "$TARGET"

step "static release build ($TARGET)"
# +crt-static links glibc statically; with an explicit --target the flag
# applies to the binary only, not to build scripts. Symbols are stripped
# (the release profile keeps them otherwise); the packages ship this file.
cmd=(cargo build --release --locked --target "$TARGET" --bin trulayer-server)
echo "RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_STRIP=symbols ${cmd[*]}"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols "${cmd[@]}"
[ -x "$BIN" ] || fail "no binary at $BIN"

step "the binary is static"
file_out=$(file -b "$BIN")
echo "file: $file_out"
case $file_out in
*"statically linked"* | *"static-pie linked"*) ;;
*) fail "$BIN is not statically linked" ;;
esac
ldd_out=$(ldd "$BIN" 2>&1 || true)
echo "ldd: $ldd_out"
case $ldd_out in
*"not a dynamic executable"* | *"statically linked"*) ;;
*) fail "ldd lists shared libraries for $BIN" ;;
esac
if readelf -d "$BIN" 2>/dev/null | grep -q NEEDED; then
    fail "$BIN has NEEDED entries: $(readelf -d "$BIN" | grep NEEDED)"
fi
echo "size: $(stat -c %s "$BIN") bytes"

step "no AVX needed"
# The baseline x86-64 target enables SSE2 at most; fail if the build was
# told otherwise (RUSTFLAGS, .cargo/config target-cpu=native, ...).
features=$(RUSTFLAGS='' rustc --print cfg --target "$TARGET" -C target-feature=+crt-static | grep target_feature | tr '\n' ' ')
echo "rustc target features: $features"
case $features in *'"avx'*) fail "the target enables AVX" ;; esac
# glibc's string functions (ifunc) and the crypto code come in AVX2/EVEX
# variants picked at run time from CPUID, so ymm registers do appear in the
# binary; they run only on CPUs that have them.
echo "instructions naming ymm registers: $(objdump -d --no-show-raw-insn "$BIN" | grep -c ymm || true) (code paths picked by CPUID at run time: glibc string functions, crypto)"
# The real test: run the binary on an emulated CPU without AVX (Nehalem,
# 2008): any AVX instruction executed there is an illegal instruction.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
nehalem() { qemu-x86_64 -cpu Nehalem "$BIN" "$@"; }
nehalem --version
nehalem config default >"$tmp/default.toml"
nehalem tls self-signed --out-dir "$tmp/tls" --hosts localhost,127.0.0.1 >/dev/null
printf '[server.tls]\ncert = "%s/tls/cert.pem"\nkey = "%s/tls/key.pem"\n[storage]\ndata_dir = "%s/data"\n' \
    "$tmp" "$tmp" "$tmp" >"$tmp/config.toml"
nehalem check-config --config "$tmp/config.toml"
nehalem migrate --config "$tmp/config.toml" >/dev/null
echo "ran --version, config default, tls self-signed, check-config and migrate under qemu -cpu Nehalem (no AVX): OK"

step "packages"
deb_dir=$TARGET_DIR/$TARGET/debian
rpm_dir=$TARGET_DIR/$TARGET/generate-rpm
rm -f "$deb_dir"/trulayer-server_*.deb "$rpm_dir"/trulayer-server-*.rpm
mkdir -p "$deb_dir" "$rpm_dir"
cargo deb --no-build --no-strip --locked --target "$TARGET" --output "$deb_dir/"
cargo generate-rpm --target "$TARGET" --output "$rpm_dir/"
deb=$(ls "$deb_dir"/trulayer-server_*.deb)
rpm=$(ls "$rpm_dir"/trulayer-server-*.rpm)
echo "binary: $BIN ($(stat -c %s "$BIN") bytes)"
echo "deb:    $deb ($(stat -c %s "$deb") bytes)"
echo "rpm:    $rpm ($(stat -c %s "$rpm") bytes)"
