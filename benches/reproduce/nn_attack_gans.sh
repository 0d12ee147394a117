#!/usr/bin/env bash
# Nearest-neighbour attacks (issue 5, section 5) on a non-private GAN and on the DP-GANs, all
# trained the same way on the same records, so that what the attack sees can be compared.
#
#   benches/reproduce/nn_attack_gans.sh [OUT] [EPOCHS]     (defaults runs/nn-attack-gans, 60)
#   NAMES="non-private dp-joint" ... runs only those (noise-layer needs dp-joint's sigma: run both)
#
# Data: the bundled fixture's 2,000 MNIST training images, split as the demo does: the first 1,500
# train the GANs, the last 500 (never seen by any GAN, drawn like the training records) are the
# holdout of the attack. Four conditional GANs, same networks, lot 100 (q = 1/15), Adam 2e-4,
# n_critic 1, EPOCHS epochs, seed 1:
#   non-private  examples/nonprivate_gan.rs: the same networks, losses and Adam, ordinary
#                gradients on uniform batches of 100, as many steps as the DP-GANs' expected
#                count (no epsilon; not a `gan train` design, so it cannot be released or certified);
#   dp-joint     design (b), sigma calibrated for epsilon 10 (RDP, delta 1e-5);
#   dp-real-only design (a), sigma calibrated for epsilon 10;
#   noise-layer  the seed paper's design at the same sigma as dp-joint (its epsilon is the authors'
#                claim, not proven).
# Each releases 2,000 images (`gan sample`), then `attack nearest-neighbour` against train and
# holdout. Prints one line per GAN and writes OUT/summary.tsv.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/nn-attack-gans}
EPOCHS=${2:-60}
THREADS=${THREADS:-2}
cargo build --release --quiet
cargo build --release --quiet --example nonprivate_gan
BIN=target/release/dpaudit
STEPS=$(python3 -c "print(round($EPOCHS * 1500 / 100))")
mkdir -p "$OUT"
# The split, as IDX files (train: first 1,500; holdout: last 500 as its t10k files).
python3 - fixtures/mnist-small "$OUT/data" <<'PY'
import gzip, os, struct, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst + "/train", exist_ok=True); os.makedirs(dst + "/holdout", exist_ok=True)
def read(name):
    raw = gzip.open(os.path.join(src, name + ".gz")).read()
    dims = raw[3]
    shape = struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims])
    return raw[:4], shape, raw[4 + 4 * dims:]
def write(path, magic, shape, body):
    with gzip.open(path + ".gz", "wb") as f:
        f.write(magic + struct.pack(">" + "I" * len(shape), *shape) + body)
for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
    magic, shape, body = read("train-" + kind)
    per = len(body) // shape[0]
    write(f"{dst}/train/train-{kind}", magic, (1500,) + shape[1:], body[:1500 * per])
    write(f"{dst}/holdout/t10k-{kind}", magic, (500,) + shape[1:], body[1500 * per:2000 * per])
PY
common=(--dataset mnist --data-dir "$OUT/data/train" --epochs "$EPOCHS" --lot-size 100 --n-critic 1
        --d-lr 2e-4 --g-lr 2e-4 --delta 1e-5 --seed 1 --threads "$THREADS" --force)
sigma_of() { python3 -c "import json; print(json.load(open('$1/gan.json'))['config']['noise_multiplier'])"; }
printf 'gan\tepsilon (RDP / PLD)\tstatus\texact copies\tshare closer to train\tpermutation p\tDCR train median\tDCR holdout median\tGAN-Leaks AUC\tTPR at 1%% FPR\ttrain s\n' > "$OUT/summary.tsv"
for name in ${NAMES:-non-private dp-joint dp-real-only noise-layer}; do
  mkdir -p "$OUT/$name"
  start=$(date +%s)
  case $name in
    non-private)
      target/release/examples/nonprivate_gan "$OUT/data/train" "$OUT/$name/synth" "$STEPS" 100 2000 1 > "$OUT/$name/train.log" 2>&1 ;;
    dp-joint)     flags=(--design joint --target-epsilon 10 --max-grad-norm 1) ;;
    dp-real-only) flags=(--design real-only --target-epsilon 10 --max-grad-norm 1) ;;
    noise-layer)  flags=(--design noise-layer --noise-multiplier "$(sigma_of "$OUT/dp-joint/run")" --max-grad-norm 1) ;;
  esac
  if [ "$name" != non-private ]; then
    "$BIN" gan train "${common[@]}" "${flags[@]}" --out "$OUT/$name/run" > "$OUT/$name/train.log" 2>&1
    "$BIN" gan sample --run "$OUT/$name/run" --count 2000 --seed 1 --force --out "$OUT/$name/synth" > /dev/null
  fi
  train_s=$(( $(date +%s) - start ))
  set +e
  "$BIN" attack nearest-neighbour --synthetic "$OUT/$name/synth" --train "$OUT/data/train" \
      --holdout "$OUT/data/holdout" --json > "$OUT/$name/nn.json"
  rc=$?
  set -e
  [ $rc -eq 0 ] || [ $rc -eq 11 ] || { echo "$name: nearest-neighbour failed ($rc)"; exit 1; }
  python3 - "$OUT/$name" "$name" "$train_s" >> "$OUT/summary.tsv" <<'PY'
import json, os, sys
d, name, secs = sys.argv[1], sys.argv[2], sys.argv[3]
nn = json.load(open(d + "/nn.json"))
eps, status = "none (non-private)", "no privacy"
if os.path.exists(d + "/synth/release.json"):
    rel = json.load(open(d + "/synth/release.json"))
    eps = " / ".join(f"{e['epsilon']:.2f}" for e in rel["epsilons"])
    status = rel["epsilon_status"].split(":")[0]
dist, m = nn["distances"], nn["attack"]["metrics"]
print("\t".join([name, eps, status, str(dist["exact_copies_of_train"]), f"{dist['share_closer_to_train']:.3f}",
                 f"{dist['share_p_value']:.2g}", f"{dist['dcr_synthetic_to_train']['median']:.3f}",
                 f"{dist['dcr_synthetic_to_holdout']['median']:.3f}", f"{m['auc']:.4f}",
                 f"{m['tpr_at_fpr']['0.01']['tpr']:.4f}", secs]))
PY
  tail -1 "$OUT/summary.tsv"
done
