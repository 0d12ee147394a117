#!/usr/bin/env bash
# README command 1: set everything up, then run dpaudit's main job on built-in data:
#   1. the built-in data (a 2,000/500 subset of real MNIST in fixtures/mnist-small);
#   2. privacy accounting of Abadi et al.'s MNIST setting by every accountant, verified by the
#      MPFR oracle, and the noise a budget of epsilon = 3 needs;
#   3. a private training run on the built-in data (DP-SGD, Poisson sampling, ledger);
#   4. a signed privacy certificate for the trained model, verified with --recompute.
# Outputs go to a fresh folder under runs/ (printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --release
bin=target/release/dpaudit
out=runs/demo-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
echo "== 1. dpaudit data info fixtures/mnist-small"
"$bin" data info fixtures/mnist-small
echo
echo "== 2. dpaudit account epsilon (DP-SGD: q = 256/60000, sigma = 1.1, 14,062 steps = 60 epochs, delta = 1e-5)"
"$bin" account epsilon --sampling-rate 0.0042666667 --noise-multiplier 1.1 --steps 14062 \
  --delta 1e-5 --accountant all --verify
echo
echo "== 2b. dpaudit account calibrate (sigma for epsilon <= 3 over the same 60 epochs)"
"$bin" account calibrate --target-epsilon 3 --sampling-rate 0.0042666667 --steps 14062 --delta 1e-5
echo
echo "== 3. dpaudit train (tanh-cnn on the 2,000 built-in images, epsilon <= 3, 10 epochs)"
"$bin" train --dataset fixture --model tanh-cnn --epochs 10 --lot-size 100 --target-epsilon 3 \
  --max-grad-norm 0.1 --optimizer sgd --lr 4 --delta 1e-5 --seed 1 --out "$out/run"
echo
echo "== 4. dpaudit keygen / cert sign / cert verify --recompute"
"$bin" keygen --out "$out/keys"
"$bin" cert sign --run "$out/run" --key "$out/keys/dpaudit-cert.key" --out "$out/certificate.json"
"$bin" cert verify "$out/certificate.json" --pubkey "$out/keys/dpaudit-cert.pub" --artifacts "$out/run" --recompute
echo
echo "everything is in $out"
