#!/usr/bin/env bash
# Regenerates fixtures/mnist-small/ deterministically from a verified MNIST directory:
# the first 2,000 training and the first 500 test examples, as gzip-compressed IDX files with the
# standard MNIST names, plus SHA256SUMS of the decompressed files.
#
# Usage: scripts/make_fixtures.sh [MNIST_DIR]
#   MNIST_DIR (argument, else the MNIST_DIR variable, else data/mnist, which
#   `dpaudit data fetch mnist --dir data/mnist` fills) must hold the four standard .gz files; their decompressed SHA-256s are checked against the pinned values first.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="${1:-${MNIST_DIR:-data/mnist}}"
if [[ ! -d "$SRC" ]]; then
  echo "no MNIST folder at $SRC: pass one (scripts/make_fixtures.sh DIR or MNIST_DIR=DIR), or run dpaudit data fetch mnist --dir data/mnist" >&2
  exit 1
fi
OUT=fixtures/mnist-small
N_TRAIN=2000
N_TEST=500

declare -A PINNED=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)
for f in "${!PINNED[@]}"; do
  got=$(gunzip -c "$SRC/$f.gz" | sha256sum | cut -d' ' -f1)
  if [[ "$got" != "${PINNED[$f]}" ]]; then
    echo "error: $SRC/$f.gz decompresses to SHA-256 $got, expected ${PINNED[$f]}" >&2
    exit 1
  fi
done

be32() { printf '%08x' "$1" | xxd -r -p; }

# subset PREFIX N: writes the first N examples of PREFIX-{images,labels} to $OUT
subset() {
  local prefix=$1 n=$2
  # `head` closes the pipe early, so gunzip dies of SIGPIPE by design; sizes are checked below.
  set +o pipefail
  { printf '\x00\x00\x08\x03'; be32 "$n"; be32 28; be32 28
    gunzip -c "$SRC/$prefix-images-idx3-ubyte.gz" | tail -c +17 | head -c $((n * 784)); } \
    | gzip -n -9 > "$OUT/$prefix-images-idx3-ubyte.gz"
  { printf '\x00\x00\x08\x01'; be32 "$n"
    gunzip -c "$SRC/$prefix-labels-idx1-ubyte.gz" | tail -c +9 | head -c "$n"; } \
    | gzip -n -9 > "$OUT/$prefix-labels-idx1-ubyte.gz"
  set -o pipefail
  local got_i got_l
  got_i=$(gunzip -c "$OUT/$prefix-images-idx3-ubyte.gz" | wc -c)
  got_l=$(gunzip -c "$OUT/$prefix-labels-idx1-ubyte.gz" | wc -c)
  if [[ $got_i -ne $((16 + n * 784)) || $got_l -ne $((8 + n)) ]]; then
    echo "error: $prefix subset has $got_i image and $got_l label bytes" >&2
    exit 1
  fi
}

mkdir -p "$OUT"
subset train "$N_TRAIN"
subset t10k "$N_TEST"
( cd "$OUT"
  for f in t10k-images-idx3-ubyte t10k-labels-idx1-ubyte train-images-idx3-ubyte train-labels-idx1-ubyte; do
    echo "$(gunzip -c "$f.gz" | sha256sum | cut -d' ' -f1)  $f"
  done > SHA256SUMS )
echo "wrote $OUT from $SRC:"
ls -l "$OUT"
