#!/bin/sh
# deps.sh — installs the Debian 12 packages tapegrad needs that are missing.
# Usage: sh scripts/deps.sh [extra packages...]   (as root, or with sudo)
set -eu
pkgs="gcc libc6-dev pkg-config meson ninja-build libcmocka-dev uthash-dev \
zlib1g-dev libjansson-dev libopenblas-dev libopenmpi-dev openmpi-bin libsleef-dev $*"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
