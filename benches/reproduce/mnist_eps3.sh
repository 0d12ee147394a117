#!/usr/bin/env bash
# MNIST at epsilon <= 3 (issue 3, section 5): tanh-cnn (Papernot et al. 2021, tempered sigmoids)
# on real MNIST, delta = 1e-5. Bar: test accuracy >= 0.985 (Papernot et al.: 0.981 below 3).
# sigma calibrated up front with the RDP accountant for epsilon 3 after all epochs. The last 5,000
# training images are held out (--validation) to tune on; accounting is over the other 55,000.
# Settings follow Papernot et al. (SGD lr 4, C = 0.1, lot 512); NOT yet measured with this script
# (README: 30 epochs of the same on all 60,000 images gave 0.9770 in 182 s on 2 threads).
#
# Usage: benches/reproduce/mnist_eps3.sh [OUT_DIR] [THREADS]
#   DATA=path/to/mnist overrides the data folder (default: ../shared/data/mnist when present,
#   else data/mnist, fetched with `dpaudit data fetch mnist`).
OUT=${1:-runs/mnist-eps3}
THREADS=${2:-2}
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ -z "${DATA:-}" ]]; then
    if [[ -d ../shared/data/mnist ]]; then DATA=$(cd ../shared/data/mnist && pwd); else DATA=data/mnist; fi
fi
cargo build --release --quiet
BIN=target/release/dpaudit
[[ -e "$DATA/train-images-idx3-ubyte.gz" || -e "$DATA/train-images-idx3-ubyte" ]] || "$BIN" data fetch mnist --dir "$DATA"
# Re-running continues the run in OUT (--resume); delete OUT to start over.
RESUME=()
[[ -e "$OUT/ledger.jsonl" ]] && RESUME=(--resume)
start=$(date +%s)
"$BIN" train --dataset mnist --data-dir "$DATA" --model tanh-cnn \
    --validation 5000 --target-epsilon 3 --delta 1e-5 \
    --epochs 40 --lot-size 512 --max-grad-norm 0.1 --optimizer sgd --lr 4 \
    --seed 1 --threads "$THREADS" --out "$OUT" "${RESUME[@]}"
wall=$(( $(date +%s) - start ))
python3 benches/reproduce/summarise_train.py 0.985 3 "$OUT" "$wall"
