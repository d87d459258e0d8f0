#!/bin/sh
# check_install.sh BUILD — installs BUILD into a temporary prefix and builds
# examples/hello.c there with `cc ... $(pkg-config --cflags --libs tapegrad)`.
set -eu
BUILD=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
meson install -C "$BUILD" --destdir "$tmp" --quiet
prefix=$(meson introspect "$BUILD" --buildoptions |
    python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"))')
libdir=$(meson introspect "$BUILD" --buildoptions |
    python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="libdir"))')
case "$libdir" in /*) ;; *) libdir="$prefix/$libdir" ;; esac
export PKG_CONFIG_SYSROOT_DIR="$tmp"
export PKG_CONFIG_PATH="$tmp$libdir/pkgconfig"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -o "$tmp/hello" examples/hello.c \
    $(pkg-config --cflags --libs tapegrad)
LD_LIBRARY_PATH="$tmp$libdir" "$tmp/hello" > "$tmp/out.txt"
grep -q "dy/dx" "$tmp/out.txt"
echo "check_install: a program built with pkg-config against the installed tapegrad runs"
