#!/bin/sh
# charlm --checkpoint N trains to the same bits as without: after a few
# GPT steps the saved models are equal byte for byte (parameters, and the
# validation loss in the metadata to 17 digits), so are the CSV rows but
# for the seconds, and the checkpointed run reports a smaller tape.
# Exit 77 (skip) where scripts/charlm_data.sh never ran, as charlm does.
set -eu
charlm=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
run() {
    out=$1; shift
    set +e
    "$charlm" --steps 4 --eval-every 2 --eval-windows 8 --sample 0 --threads 2 \
        --log "$dir/$out.csv" --save "$dir/$out.safetensors" "$@" > "$dir/$out.txt"
    rc=$?
    set -e
    [ $rc -eq 77 ] && exit 77
    [ $rc -eq 0 ] || { cat "$dir/$out.txt"; exit 1; }
}
run plain
run ckpt --checkpoint 1
cut -d, -f1-3 "$dir/plain.csv" > "$dir/plain.rows"
cut -d, -f1-3 "$dir/ckpt.csv" > "$dir/ckpt.rows"
cat "$dir/ckpt.rows"
cmp "$dir/plain.rows" "$dir/ckpt.rows"
cmp "$dir/plain.safetensors" "$dir/ckpt.safetensors"
mb() { sed -n 's/^tape: \([0-9.]*\) MB.*/\1/p' "$dir/$1.txt"; }
echo "tape per step: $(mb plain) MB plain, $(mb ckpt) MB with a checkpoint per block"
awk -v a="$(mb ckpt)" -v b="$(mb plain)" 'BEGIN { exit !(a > 0 && a < b) }'
