#!/bin/sh
# train.sh — installs what is missing (including the Fashion-MNIST data set),
# builds tapegrad optimised, and trains the main example with its defaults.
# Extra arguments go to the trainer, e.g. sh scripts/train.sh --epochs 3
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh dataset-fashion-mnist gnuplot-nox
BUILD=${BUILD:-build-release}
[ -d "$BUILD" ] || meson setup "$BUILD" --buildtype=release
meson compile -C "$BUILD" fashion_mnist
exec "$BUILD/examples/fashion_mnist" "$@"
