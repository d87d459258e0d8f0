#!/bin/sh
# check_install.sh BUILD — installs BUILD into a temporary prefix and builds
# examples/hello.c (autograd.h) and examples/regression.c (tapegrad.h, so
# every public header) there with `cc ... $(pkg-config --cflags --libs tapegrad)`.
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
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -o "$tmp/regression" examples/regression.c \
    $(pkg-config --cflags --libs tapegrad) -lm
LD_LIBRARY_PATH="$tmp$libdir" "$tmp/hello" > "$tmp/out.txt"
grep -q "dy/dx" "$tmp/out.txt"
LD_LIBRARY_PATH="$tmp$libdir" "$tmp/regression" > "$tmp/out2.txt"
grep -q "w = " "$tmp/out2.txt"
echo "check_install: a program built with pkg-config against the installed tapegrad runs"
