#!/usr/bin/env bash
# Membership inference on MNIST subsets (issue 5, section 4): a non-private MLP against DP-SGD
# MLPs at epsilon 1 and 8 (RDP accountant, delta 1e-5), attacked with the loss threshold and
# LiRA (offline and online) from 16 shadow models; 4 of the 17 models serve in turn as the
# target, so each attack scores 4 x 10,000 population examples (about 20,000 non-members: FPR
# resolution about 5e-5).
#
# Usage: benches/reproduce/mia_mnist.sh [OUT_DIR] [THREADS]
#   DATA=path/to/mnist names the data folder (default: data/mnist, fetched there with
#   `dpaudit data fetch mnist` when it holds no MNIST).
# Re-running resumes: finished models are kept in OUT_DIR/*/runs.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/mia-mnist}
THREADS=${2:-2}
DATA=${DATA:-data/mnist}
cargo build --release --quiet
BIN=target/release/dpaudit
[[ -e "$DATA/train-images-idx3-ubyte.gz" || -e "$DATA/train-images-idx3-ubyte" ]] || "$BIN" data fetch mnist --dir "$DATA"
mkdir -p "$OUT"

spec() { # name, privacy lines
    cat > "$OUT/$1.toml" <<TOML
name = "mnist-mlp-$1"
description = "MLP (784-1000-10) on a random half of the first 10,000 MNIST training images; 16 shadows."
[data]
dataset = "$DATA"
population = 10000
[target]
model = "mlp"
$2
max_grad_norm = 1.0
delta = 1e-5
optimizer = "momentum"
momentum = 0.9
[attack]
shadows = 16
targets = 4
seed = 1
variance = "global"
TOML
}
# The non-private baseline: small lots and many epochs, to overfit.
spec nonprivate $'private = false\nlot_size = 64\nepochs = 30\nlr = 0.05'
spec eps8 $'private = true\ntarget_epsilon = 8.0\nlot_size = 256\nepochs = 30\nlr = 0.1'
spec eps1 $'private = true\ntarget_epsilon = 1.0\nlot_size = 256\nepochs = 30\nlr = 0.1'

start=$(date +%s)
for name in nonprivate eps8 eps1; do
    t0=$(date +%s)
    "$BIN" attack mia --target-config "$OUT/$name.toml" --out "$OUT/$name" --threads "$THREADS"
    echo "  ($name: $(( $(date +%s) - t0 )) s wall)"
done
echo "total wall: $(( $(date +%s) - start )) s"

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
print("\n| model | epsilon (RDP / PLD) | acc. members / non-members | attack | AUC | TPR@1% | TPR@0.1% | TPR@0.01% |")
print("|---|---|---|---|---|---|---|---|")
for name in ["nonprivate", "eps8", "eps1"]:
    r = json.load(open(f"{out}/{name}/mia.json"))
    eps = " / ".join(f"{e['epsilon']:.2f}" for e in r["privacy"]["epsilons"]) or "inf (no privacy)"
    for a in r["attacks"]:
        t = a["metrics"]["tpr_at_fpr"]
        f = lambda k: f"{100*t[k]['tpr']:.2f}%" + ("" if t[k]["resolved"] else "*")
        print(f"| {name} | {eps} | {r['target_member_accuracy']:.3f} / {r['target_non_member_accuracy']:.3f} | {a['attack']} | {a['metrics']['auc']:.4f} | {f('0.01')} | {f('0.001')} | {f('0.0001')} |")
PY
