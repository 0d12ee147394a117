#!/usr/bin/env bash
# README command 1: set everything up, then run dpaudit's main job on built-in data: the whole
# pre-release audit (`dpaudit demo`) on the bundled 2,000/500 subset of real MNIST
# (fixtures/mnist-small):
#   1. DP-SGD to a target epsilon (3, delta 1e-5; sigma calibrated up front);
#   2. every accountant from the ledger (RDP, PLD, the MPFR oracle);
#   3. a white-box replay audit (500 trainings per side, Dirac canary) and a loss-threshold
#      membership inference;
#   4. a DP-GAN (epsilon 10) and a synthetic release with its nearest-neighbour screen;
#   5. a signed certificate per release, verified;
#   6. the HTML compliance reports.
# About 2 minutes on 2 cores after set-up. Extra arguments go to `dpaudit demo` (e.g. --full for
# real MNIST, --out DIR, --json). Outputs go to a fresh folder under runs/ (printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --release
exec target/release/dpaudit demo "$@"
