#!/usr/bin/env bash
# README command 1: set everything up, then run dpaudit's main job on built-in data.
# For now the main job is privacy accounting of a DP-SGD run on the MNIST fixture's size
# (Abadi et al.'s lot 256 of 60,000, noise multiplier 1.1, 60 epochs), cross-checked by every
# accountant and verified by the MPFR oracle, plus a look at the built-in data.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --release
bin=target/release/dpaudit
echo "== dpaudit data info fixtures/mnist-small"
"$bin" data info fixtures/mnist-small
echo
echo "== dpaudit account epsilon (DP-SGD: q = 256/60000, sigma = 1.1, 14,062 steps = 60 epochs, delta = 1e-5)"
"$bin" account epsilon --sampling-rate 0.0042666667 --noise-multiplier 1.1 --steps 14062 \
  --delta 1e-5 --accountant all --verify
echo
echo "== dpaudit account calibrate (sigma for epsilon = 3 over the same 60 epochs)"
"$bin" account calibrate --target-epsilon 3 --sampling-rate 0.0042666667 --steps 14062 --delta 1e-5
