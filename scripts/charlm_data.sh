#!/bin/sh
# charlm_data.sh — installs Debian's bible-kjv (if missing) and decodes the
# whole King James Bible once into the text file examples/charlm reads by
# default (4.3 MB of ASCII).
# Usage: sh scripts/charlm_data.sh [OUT]   (default /var/cache/tapegrad/kjv.txt)
set -eu
cd "$(dirname "$0")/.."
OUT=${1:-/var/cache/tapegrad/kjv.txt}
sh scripts/deps.sh bible-kjv
mkdir -p "$(dirname "$OUT")"
# A temporary renamed into place: a killed decode never leaves half a Bible.
bible "Gen1:1-Rev22:21" > "$OUT.tmp.$$"
mv "$OUT.tmp.$$" "$OUT"
echo "charlm_data: $(wc -c < "$OUT") bytes in $OUT"
