#!/usr/bin/env bash
# Post-processing variants of a finished gan_mnist.sh run: release 60,000 images at latent
# temperature 0.5, with discriminator ranking (--keep 0.5), and with both, then evaluate each on
# the same CAS / fid_mnist_classifier / real-vs-fake protocol. Post-processing of the released
# transcript: the epsilon is the run's (proofs/gan/design_b_joint_clipping.md, "Sampling a release").
#
#   benches/reproduce/gan_postprocess.sh OUT [NAME:FLAGS ...]   (OUT as given to gan_mnist.sh; needs OUT/run)
#
# NAME:FLAGS pairs replace the three default variants, e.g. "label05:--keep 0.5 --rank-by label".
# DATA (default data/mnist) is the real folder the evaluation uses; BIN a dpaudit binary (default:
# build one); SEED (default 1) seeds the sampling. Writes OUT/synth-NAME and OUT/eval-NAME.json, prints one line per variant.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?run output folder}
DATA=${DATA:-data/mnist}
if [[ -z "${BIN:-}" ]]; then
    cargo build --release --quiet
    BIN=target/release/dpaudit
fi
shift
variants=("$@")
if [[ ${#variants[@]} -eq 0 ]]; then
    variants=("t05:--temperature 0.5" "k05:--keep 0.5" "k05t05:--keep 0.5 --temperature 0.5")
fi
for v in "${variants[@]}"; do
    name=${v%%:*}
    flags=${v#*:}
    # shellcheck disable=SC2086 # flags holds several words on purpose
    $BIN gan sample --run "$OUT/run" --count 60000 --seed "${SEED:-1}" $flags --force --out "$OUT/synth-$name" > /dev/null
    $BIN evaluate synthetic --synthetic "$OUT/synth-$name" --real "$DATA" --cas-epochs "${CAS_EPOCHS:-5}" \
        --threads "${THREADS:-2}" --json > "$OUT/eval-$name.json"
    python3 -c "import json; e=json.load(open('$OUT/eval-$name.json')); c=e['cas']; print('$name ($flags): CAS', c['test_accuracy'], 'validation', c['validation_accuracy'], 'fid_mnist_classifier', round(e['fid_mnist_classifier'], 1), 'real-vs-fake', e['real_vs_fake_accuracy'])"
done
