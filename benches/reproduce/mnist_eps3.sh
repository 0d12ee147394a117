#!/usr/bin/env bash
# MNIST at epsilon <= 3 (issue 3, section 5): tanh-cnn (Papernot et al. 2021, tempered sigmoids)
# on real MNIST, delta = 1e-5. Bar: test accuracy >= 0.985 (Papernot et al.: 0.981 below 3).
# sigma calibrated up front with the RDP accountant for epsilon 3 after all epochs. The last 5,000
# training images are held out (--validation) to tune on; accounting is over the other 55,000.
# Settings follow Papernot et al. (C = 0.1, lot 512, 40 epochs) except the learning rate, chosen on
# the validation split (seed 1; validation accuracy): lr 4 (Papernot et al.'s): 0.9818 (this script
# before the change: test 0.9798); lr 8: 0.9840 (chosen); lr 16: 0.9786.
#
# Usage: benches/reproduce/mnist_eps3.sh [OUT_DIR] [THREADS]
#   DATA=path/to/mnist overrides the data folder (default: ../shared/data/mnist when present,
#   else data/mnist, fetched with `dpaudit data fetch mnist`).
OUT=${1:-runs/mnist-eps3}
THREADS=${2:-2}
set -euo pipefail
source "$(dirname "$0")/train_common.sh"
reproduce_training mnist 0.985 3 "$OUT" "$THREADS" -- \
    --model tanh-cnn --epochs 40 --lot-size 512 --max-grad-norm 0.1 --optimizer sgd --lr 8
