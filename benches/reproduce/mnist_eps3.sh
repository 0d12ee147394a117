#!/usr/bin/env bash
# MNIST at epsilon <= 3 (issue 3, section 5), delta = 1e-5. Bar: test accuracy >= 0.985
# (Papernot et al. 2021: 0.981 below 3 with tanh-cnn; Tramèr & Boneh 2021: 0.987 with ScatterNet
# features and a linear model). Model: scatter-linear, DP-SGD on the images' scattering coefficients
# (J = 2, L = 8: a fixed, data-independent feature map, so no privacy cost;
# proofs/train/scattering.md), GroupNorm, then one linear layer. sigma calibrated up front with the
# RDP accountant for epsilon 3 after all epochs. The last 5,000 training images are held out
# (--validation) to tune on; accounting is over the other 55,000.
#
# Settings chosen on the validation split (seed 1, 2 threads, lot 4096, C = 0.1, momentum 0.9;
# validation accuracy): 20 epochs lr 4: 0.9882; 20 epochs lr 8: 0.9888; the same with parameter
# averaging (--ema 0.999): 0.9890; 40 epochs lr 4: 0.9892 (chosen); 60 epochs lr 4: 0.9894; 40
# epochs lr 4 with --ema 0.999: 0.9894; scatter-cnn 20 epochs lr 4: 0.9838. Rule: the highest
# validation accuracy, and among settings within one standard error of it (about 0.0015 on 5,000
# examples) the cheapest without averaging. Earlier versions of this script trained tanh-cnn (40
# epochs, lot 512, C = 0.1, SGD lr 8, validation 0.9840): 0.9826 test, bar not met.
#
# Usage: benches/reproduce/mnist_eps3.sh [OUT_DIR] [THREADS]
#   DATA=path/to/mnist names the data folder (default: data/mnist, fetched there with
#   `dpaudit data fetch mnist` when it holds no MNIST).
OUT=${1:-runs/mnist-eps3}
THREADS=${2:-2}
set -euo pipefail
source "$(dirname "$0")/train_common.sh"
reproduce_training mnist 0.985 3 "$OUT" "$THREADS" -- \
    --model scatter-linear --epochs 40 --lot-size 4096 --max-grad-norm 0.1 --optimizer momentum --momentum 0.9 --lr 4 --physical-batch 1024
