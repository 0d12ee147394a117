#!/usr/bin/env bash
# MNIST at epsilon <= 1 (issue 3, section 5): tanh-cnn on real MNIST, delta = 1e-5. Bar: test
# accuracy >= 0.97 (Abadi et al.: 0.95 at epsilon 2, 0.90 at 0.5). sigma calibrated up front with
# the RDP accountant for epsilon 1 after all epochs; fewer epochs and larger lots than at epsilon
# 3 keep sigma moderate. The last 5,000 training images are held out (--validation) to tune on.
# Settings chosen on that split (seed 1, 1 thread; validation accuracy), C = 0.1, SGD: 20 epochs,
# lot 1024 with lr 4: 0.9620; lr 8: 0.9712; lr 16: 0.9702; lr 32: 0.9642; lot 2048 lr 16: 0.9704;
# 30 epochs, lot 1024, lr 8: 0.9724 (chosen). Choosing the best of 6 makes its validation figure
# optimistic; the test figure is clean.
#
# Usage: benches/reproduce/mnist_eps1.sh [OUT_DIR] [THREADS]
#   DATA=path/to/mnist names the data folder (default: data/mnist, fetched there with
#   `dpaudit data fetch mnist` when it holds no MNIST).
OUT=${1:-runs/mnist-eps1}
THREADS=${2:-2}
set -euo pipefail
source "$(dirname "$0")/train_common.sh"
reproduce_training mnist 0.97 1 "$OUT" "$THREADS" -- \
    --model tanh-cnn --epochs 30 --lot-size 1024 --max-grad-norm 0.1 --optimizer sgd --lr 8
