#!/usr/bin/env bash
# DP-GAN on real MNIST (design (b), joint clipping), then CAS / fid_mnist_classifier / real-vs-fake
# on 60,000 synthetic images, on the fixed protocol of `dpaudit evaluate synthetic`.
#
#   benches/reproduce/gan_mnist.sh EPSILON EPOCHS [OUT]
#
# delta = 1e-5; sigma is calibrated up front with the RDP accountant for EPSILON after all the
# discriminator steps. N_CRITIC (default 10: Bie et al. 2023 find that several discriminator steps
# per generator step restore the balance DP noise upsets), LOT (128), D_LR and G_LR (Adam, 2e-4)
# override the training settings; DATASET=fashion-mnist (with DATA=data/fashion-mnist) trains on
# Fashion-MNIST instead; DESIGN (default joint; real-only or noise-layer) picks the privacy design;
# TEMPERATURE (default 1) scales the release's latents (`gan sample --temperature`) and KEEP
# (default 1) keeps that fraction of generated images by discriminator ranking (`gan sample
# --keep`), both post-processing; G_EMA (default: none) releases a moving average of the generator
# with that decay (`gan train --g-ema`, post-processing too); CONDITIONING (default label-planes;
# or classifier, the 11-logit "K + 1 classes" discriminator) picks `gan train --conditioning`. SEED
# (default 1) seeds training and sampling. RELEASE_TEMPERATURES (default: none), e.g. "1.5 2 2.5 3",
# then also releases the generator at each of those temperatures (gan_postprocess.sh, into
# OUT/synth-tNN) and chooses among all the releases by best CAS validation accuracy
# (gan_choose_release.py; it prints the chosen release's test CAS and its epsilon per accountant).
# RELEASE_LABELS (default "generator"; "generator discriminator" for both) says whose labels those
# releases carry: `generator` (the label each image was generated for, release OUT/synth-tNN) or
# `discriminator` (`gan sample --labels discriminator`: the final classifier discriminator's
# reading of each image, OUT/synth-tNN-dl, also at T = 1); all of them enter the choice.
# Needs data/mnist (`dpaudit data fetch mnist`, or a copy). Writes
# OUT/run (the GAN), OUT/synth (the release) and OUT/eval.json; prints wall times.
set -euo pipefail
cd "$(dirname "$0")/../.."
# glibc: keep allocations up to 32 MiB on the heap and do not hand freed memory back at once, so
# each discriminator step's per-example tensors reuse pages instead of faulting in fresh mmaps
# (0.2 epochs: 12 to 17% less wall time, BENCHMARKS.md); set them yourself to override.
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-33554432}
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-4000000000}
export MALLOC_TOP_PAD_=${MALLOC_TOP_PAD_:-268435456}
EPS=${1:?epsilon}
EPOCHS=${2:?epochs}
OUT=${3:-runs/gan-mnist-eps$EPS}
DATA=${DATA:-data/mnist}
THREADS=${THREADS:-2}
# BIN=path/to/dpaudit uses that binary (the sweep freezes one); otherwise build it here.
if [[ -z "${BIN:-}" ]]; then
    cargo build --release --quiet
    BIN=target/release/dpaudit
fi
mkdir -p "$OUT"
t0=$(date +%s)
$BIN gan train --dataset "${DATASET:-mnist}" --data-dir "$DATA" --design "${DESIGN:-joint}" --target-epsilon "$EPS" --delta 1e-5 \
    --epochs "$EPOCHS" --lot-size "${LOT:-128}" --max-grad-norm 1 --n-critic "${N_CRITIC:-10}" --d-lr "${D_LR:-2e-4}" --g-lr "${G_LR:-2e-4}" \
    --conditioning "${CONDITIONING:-label-planes}" ${G_EMA:+--g-ema "$G_EMA"} --seed "${SEED:-1}" --threads "$THREADS" --force --out "$OUT/run"
t1=$(date +%s)
$BIN gan sample --run "$OUT/run" --count 60000 --seed "${SEED:-1}" --temperature "${TEMPERATURE:-1}" --keep "${KEEP:-1}" --force --out "$OUT/synth"
t2=$(date +%s)
$BIN evaluate synthetic --synthetic "$OUT/synth" --real "$DATA" --cas-epochs "${CAS_EPOCHS:-5}" \
    --threads "$THREADS" --json > "$OUT/eval.json"
t3=$(date +%s)
echo "train $((t1 - t0)) s, sample $((t2 - t1)) s, evaluate $((t3 - t2)) s"
python3 -c "import json,sys; e=json.load(open('$OUT/eval.json')); print('CAS', e['cas']['test_accuracy'], 'fid_mnist_classifier', e['fid_mnist_classifier'], 'real-vs-fake', e['real_vs_fake_accuracy'])"
if [[ -n "${RELEASE_TEMPERATURES:-}" ]]; then
    variants=()
    for labels in ${RELEASE_LABELS:-generator}; do
        case $labels in
            generator)
                for t in $RELEASE_TEMPERATURES; do
                    variants+=("t${t//./}:--temperature $t")
                done ;;
            discriminator)
                variants+=("t1-dl:--temperature 1 --labels discriminator")
                for t in $RELEASE_TEMPERATURES; do
                    [[ $t == 1 ]] || variants+=("t${t//./}-dl:--temperature $t --labels discriminator")
                done ;;
            *) echo "RELEASE_LABELS: generator or discriminator, not $labels" >&2; exit 2 ;;
        esac
    done
    DATA="$DATA" BIN="$BIN" THREADS="$THREADS" SEED="${SEED:-1}" benches/reproduce/gan_postprocess.sh "$OUT" "${variants[@]}"
    python3 benches/reproduce/gan_choose_release.py "$OUT"
fi
