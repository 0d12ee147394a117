#!/usr/bin/env bash
# Privacy-utility sweep of the DP-GAN on real MNIST (issue 4, section 2): one gan_mnist.sh run per
# epsilon at the same epoch count and settings, then CAS against epsilon (cas_vs_epsilon.svg) and
# a markdown table with each epsilon's sample grid (sweep.md), both in OUT_ROOT.
#
#   benches/reproduce/gan_sweep.sh EPOCHS [OUT_ROOT]
#
# EPSILONS (default "1 2 5 10") and every variable gan_mnist.sh reads (N_CRITIC, LOT, D_LR, G_LR,
# CONDITIONING, TEMPERATURE, DATA, THREADS) apply to all runs. An epsilon whose OUT_ROOT/epsE/eval.json exists is
# not run again (delete the folder to redo it). The binary is built once and frozen for the whole
# sweep (BIN), so editing the source while it runs cannot change later runs. Run nothing else that
# uses libtorch meanwhile: two libtorch processes on two cores slow each other down many times.
set -euo pipefail
cd "$(dirname "$0")/../.."
EPOCHS=${1:?epochs}
ROOT=${2:-runs/gan-sweep-${EPOCHS}ep}
mkdir -p "$ROOT"
if [[ -z "${BIN:-}" ]]; then
    cargo build --release --quiet
    BIN="$ROOT/dpaudit"
    # A copy, so that rebuilding during the sweep does not change it; the front and its trainer
    # travel together.
    cp target/release/dpaudit target/release/dpaudit-torch "$ROOT/"
fi
export BIN
for eps in ${EPSILONS:-1 2 5 10}; do
    if [[ -e "$ROOT/eps$eps/eval.json" ]]; then
        echo "epsilon $eps: $ROOT/eps$eps/eval.json exists, kept"
        continue
    fi
    echo "epsilon $eps: training ($EPOCHS epochs)"
    bash benches/reproduce/gan_mnist.sh "$eps" "$EPOCHS" "$ROOT/eps$eps" 2>&1 | grep -v $'\r' | tee "$ROOT/eps$eps.log" | tail -3
done
python3 benches/reproduce/gan_sweep_plot.py "$ROOT"
