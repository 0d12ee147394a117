#!/usr/bin/env bash
# Abadi et al. 2016 reproduction (issue 3, section 5): the abadi-pca model (DP-PCA of the
# images to 60 dimensions, then 1000 ReLU units) on real MNIST at epsilon <= 8, delta = 1e-5.
# Bar: test accuracy >= 0.97. DP-PCA (sigma_p = 4, Abadi et al.'s small-noise setting) is the
# ledger's first phase (q = 1, one step); sigma of the DP-SGD steps is calibrated up front with the
# RDP accountant so that the composition of both is at most 8. The last 5,000 training images are
# held out (--validation): the settings below were chosen on their accuracy, never on the test
# set, and the privacy accounting is over the other 55,000. All settings tried are at target
# epsilon 8, sigma_p 4 unless said, seed 1, plain SGD at a constant rate unless said.
# First round, plain projection (lot 600, C = 4 unless said), validation accuracy: 100 epochs
# lr 0.1: 0.9684; the same with a linear decay to 0: 0.9576; 50 epochs lr 0.1: 0.9560; 100
# epochs lr 0.2: 0.9724; 200 epochs lr 0.1: 0.9712; lot 2400 lr 0.4: 0.9692; momentum 0.9 lr
# 0.02: 0.9714; lr 0.4: 0.9660; 200 epochs lr 0.2: 0.9676; C = 2 lr 0.4: 0.9722; lr 0.3 cosine:
# 0.9708; 150 epochs lr 0.2: 0.9716; sigma_p 7 lr 0.2: 0.9718.
# Second round, --pca-whiten (each component scaled to the same energy from the released
# eigenvalues; post-processing), 100 epochs: lot 600 C 4 lr 0.2: 0.9746; lr 0.4: 0.9628; lr 0.1:
# 0.9744; C 2 lr 0.2: 0.9746; C 8 lr 0.2: 0.9598; C 4 lr 0.2 --ema 0.999: 0.9730; C 2 lr 0.4:
# 0.9750; sigma_p 2 C 2 lr 0.4: 0.9732; lot 1200 C 2 lr 0.8: 0.9756; lot 1200 200 epochs: 0.9712;
# lot 2400 C 2 lr 1.6: 0.9790 (chosen, the highest); lot 2400 lr 0.8: 0.9762; lot 4800 lr 3.2:
# 0.9782; and, to measure whitening itself, lot 2400 C 2 lr 1.6 without it: 0.9736. A first
# whitening variant (components scaled up to the first one's energy, floor 1e-2; lot 600 C 4 lr
# 0.2) gave 0.9654 and was replaced by the energy-preserving scale.
# Abadi et al. used lot 600, C = 4, lr 0.1 decayed to 0.052, sigma 2 / sigma_p 4.
#
# Usage: benches/reproduce/abadi_pca.sh [OUT_DIR] [THREADS]
#   DATA=path/to/mnist names the data folder (default: data/mnist, fetched there with
#   `dpaudit data fetch mnist` when it holds no MNIST).
OUT=${1:-runs/abadi-pca}
THREADS=${2:-1}
set -euo pipefail
source "$(dirname "$0")/train_common.sh"
reproduce_training mnist 0.97 8 "$OUT" "$THREADS" -- \
    --model abadi-pca --pca-dims 60 --pca-noise-multiplier 4 --pca-whiten --epochs 100 --lot-size 2400 --max-grad-norm 2 --optimizer sgd --lr 1.6
