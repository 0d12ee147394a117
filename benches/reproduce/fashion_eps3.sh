#!/usr/bin/env bash
# Fashion-MNIST at epsilon <= 3 (issue 3, section 5): real Fashion-MNIST (Debian's
# dataset-fashion-mnist, through `dpaudit data fetch fashion-mnist`), delta = 1e-5. Bar: test
# accuracy >= 0.88 (Papernot et al. 2021: 0.861 with tanh-cnn; Tramèr & Boneh 2021: 0.897 with
# ScatterNet features and a linear model). Model: scatter-linear, DP-SGD on the images' scattering
# coefficients (J = 2, L = 8: fixed and data-independent, so no privacy cost;
# proofs/train/scattering.md), GroupNorm, one linear layer. sigma calibrated up front with the RDP
# accountant for epsilon 3 after all epochs. The last 5,000 training images are held out
# (--validation) to tune on.
#
# Settings chosen on the validation split (seed 1, 2 threads, lot 4096, C = 0.1, momentum 0.9;
# validation accuracy): 20 epochs lr 4: 0.8940; 20 epochs lr 8: 0.8986; 40 epochs lr 4: 0.8994
# (chosen). Earlier versions of this script trained tanh-cnn (Papernot et al.'s settings, lr 32
# chosen on validation among 2..64, validation 0.8646): 0.8604 test, bar not met; the non-private
# tanh-cnn (10 epochs) reaches 0.8886 validation.
#
# Usage: benches/reproduce/fashion_eps3.sh [OUT_DIR] [THREADS]
#   DATA=path/to/fashion-mnist names the data folder (default: data/fashion-mnist, fetched there
#   with `dpaudit data fetch fashion-mnist` when it holds no Fashion-MNIST).
OUT=${1:-runs/fashion-eps3}
THREADS=${2:-2}
set -euo pipefail
source "$(dirname "$0")/train_common.sh"
reproduce_training fashion-mnist 0.88 3 "$OUT" "$THREADS" -- \
    --model scatter-linear --epochs 40 --lot-size 4096 --max-grad-norm 0.1 --optimizer momentum --momentum 0.9 --lr 4 --physical-batch 1024
