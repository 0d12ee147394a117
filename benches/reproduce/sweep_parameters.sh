#!/usr/bin/env bash
# Effects of parameters (issue 3, section 5; Abadi et al. 2016, section 5): vary one parameter at a
# time (lot size, noise multiplier, clipping norm, learning rate, PCA dimension, hidden units) with
# the others held at a baseline, train `abadi-pca` (DP-PCA, then one hidden ReLU layer) with DP-SGD
# for each value and seed, and plot test accuracy (and validation accuracy) and epsilon (RDP and
# PLD, delta = 1e-5, from each run's metrics.json) against the parameter.
#
# Baseline (chosen on the validation accuracy of a handful of fixture runs, not on the test set):
# lot 150, sigma 2, C 4, plain SGD lr 0.3, 10 epochs, DP-PCA to 60 dimensions at sigma_p 4,
# 1000 hidden units. The last VALIDATION training examples are held out (--validation) and
# privacy is accounted over the rest. Picking hyper-parameters by the *test* accuracy plotted here
# would itself leak the test set into the model choice (and, for private data, is a privacy leak
# not counted in epsilon): read the validation curve to choose, the test curve to report.
# epsilon includes the DP-PCA release (the ledger's first phase, q = 1, sigma_p, 1 step). Lot
# size changes the number of steps (epochs are fixed), so epsilon moves with it; the clipping
# norm, learning rate, PCA dimension and width do not change epsilon.
#
# Usage: benches/reproduce/sweep_parameters.sh [OUT_DIR] [RESULTS_DIR]
#   OUT_DIR      run folders (default runs/sweep; re-running skips runs that finished)
#   RESULTS_DIR  results.tsv, results.json, one SVG per parameter
#                (default benches/reproduce/results/sweep)
#   DATASET=fixture|mnist|fashion-mnist (default fixture: fixtures/mnist-small, 2,000/500),
#   DATA_DIR=path (e.g. data/mnist with DATASET=mnist), EPOCHS (10),
#   VALIDATION (500), SEEDS ("1 2 3"), THREADS (1); the baseline: LOT, SIGMA, CLIP, LR, PCA, HIDDEN
#   (the value lists below contain the default baseline only).
OUT=${1:-runs/sweep}
RESULTS=${2:-benches/reproduce/results/sweep}
set -euo pipefail
cd "$(dirname "$0")/../.."
DATASET=${DATASET:-fixture}
EPOCHS=${EPOCHS:-10}
VALIDATION=${VALIDATION:-500}
SEEDS=${SEEDS:-1 2 3}
THREADS=${THREADS:-1}
DATA_ARGS=()
[[ -n "${DATA_DIR:-}" ]] && DATA_ARGS=(--data-dir "$DATA_DIR")

# Baseline and the values swept (each list includes the baseline).
LOT=${LOT:-150}; SIGMA=${SIGMA:-2}; CLIP=${CLIP:-4}; LR=${LR:-0.3}; PCA=${PCA:-60}; HIDDEN=${HIDDEN:-1000}
declare -A VALUES=(
    [lot_size]="25 50 100 150 300 600"
    [noise_multiplier]="0.5 1 2 4 8"
    [clipping_norm]="0.5 1 2 4 8 16"
    [learning_rate]="0.01 0.03 0.1 0.3 1"
    [pca_dims]="10 20 40 60 120 200"
    [hidden_units]="50 100 200 500 1000 2000"
)
ORDER="lot_size noise_multiplier clipping_norm learning_rate pca_dims hidden_units"

cargo build --release --quiet --bin dpaudit --example sweep_plots
BIN=target/release/dpaudit
mkdir -p "$OUT"
MANIFEST="$OUT/manifest.tsv"
: > "$MANIFEST"
start=$(date +%s)
for param in $ORDER; do
    for value in ${VALUES[$param]}; do
        lot=$LOT; sigma=$SIGMA; clip=$CLIP; lr=$LR; pca=$PCA; hidden=$HIDDEN
        case $param in
            lot_size) base=$LOT ;; noise_multiplier) base=$SIGMA ;; clipping_norm) base=$CLIP ;;
            learning_rate) base=$LR ;; pca_dims) base=$PCA ;; hidden_units) base=$HIDDEN ;;
        esac
        case $param in
            lot_size) lot=$value ;;
            noise_multiplier) sigma=$value ;;
            clipping_norm) clip=$value ;;
            learning_rate) lr=$value ;;
            pca_dims) pca=$value ;;
            hidden_units) hidden=$value ;;
        esac
        for seed in $SEEDS; do
            run="$OUT/$param-$value-s$seed"
            if [[ ! -e "$run/metrics.json" ]]; then
                rm -rf "$run"
                "$BIN" train --dataset "$DATASET" "${DATA_ARGS[@]}" --model abadi-pca \
                    --pca-dims "$pca" --pca-noise-multiplier 4 --hidden "$hidden" \
                    --validation "$VALIDATION" --epochs "$EPOCHS" --lot-size "$lot" \
                    --noise-multiplier "$sigma" --max-grad-norm "$clip" --delta 1e-5 \
                    --optimizer sgd --lr "$lr" --seed "$seed" --threads "$THREADS" \
                    --out "$run" > "$run.log" 2>&1 || { cat "$run.log"; exit 1; }
            fi
            printf '%s\t%s\t%s\t%s\t%s\n' "$param" "$value" "$seed" "$run" "$base" >> "$MANIFEST"
        done
        echo "$param = $value done ($(( $(date +%s) - start )) s)"
    done
done
target/release/examples/sweep_plots "$MANIFEST" "$RESULTS"
echo "wall: $(( $(date +%s) - start )) s (dataset $DATASET, $EPOCHS epochs, seeds $SEEDS, threads $THREADS)"
