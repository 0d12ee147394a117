#!/usr/bin/env bash
# Peak memory, private against non-private (issue 3: "peak memory of the private run at most 1.3
# times the non-private run"). Two measurements, each mode in its own process, ROUNDS interleaved
# rounds, medians:
#   1. the gradient step alone: examples/step_memory.rs (tanh-cnn, lot 256, 2 threads, the
#      workload of benches/per_example.rs), the growth of the process's peak RSS over its set-up;
#   2. a whole training run: `dpaudit train` of tanh-cnn on the bundled fixture (2,000 images,
#      lot 256, 2 epochs), its peak RSS by GNU time, private (sigma 1) against --no-privacy.
# Usage: benches/peak_memory.sh [ROUNDS] [STEPS]   (defaults 5 and 20)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
STEPS=${2:-20}
cargo build --release --quiet --example step_memory
cargo build --release --quiet
EX=target/release/examples/step_memory
BIN=target/release/dpaudit
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  for mode in nonprivate private; do
    "$EX" "$mode" "$STEPS" >> "$tmp/step.jsonl"
  done
  for mode in nonprivate private; do
    flags=(--noise-multiplier 1 --max-grad-norm 1)
    [ "$mode" = nonprivate ] && flags=(--no-privacy)
    /usr/bin/time -f "%M" -o "$tmp/rss" "$BIN" train --dataset fixture --model tanh-cnn --epochs 2 \
      --lot-size 256 --lr 0.5 --seed "$r" --threads 2 "${flags[@]}" --out "$tmp/run-$mode-$r" > /dev/null 2>&1
    printf '{"mode":"%s","train_peak_kib":%s}\n' "$mode" "$(tail -1 "$tmp/rss")" >> "$tmp/train.jsonl"
  done
done
python3 - "$tmp/step.jsonl" "$tmp/train.jsonl" "$ROUNDS" "$STEPS" <<'PY'
import json, statistics, sys
step = [json.loads(l) for l in open(sys.argv[1])]
train = [json.loads(l) for l in open(sys.argv[2])]
rounds, steps = sys.argv[3], sys.argv[4]
def med(rows, mode, key):
    return statistics.median(r[key] for r in rows if r["mode"] == mode)
print(f"tanh-cnn, lot 256, 2 threads; medians of {rounds} interleaved rounds, each mode in its own process")
n, p = med(step, "nonprivate", "step_peak_kib"), med(step, "private", "step_peak_kib")
print(f"gradient step ({steps} steps): peak RSS growth over set-up: non-private {n/1024:.1f} MiB, private {p/1024:.1f} MiB, ratio {p/n:.2f}")
n, p = med(step, "nonprivate", "peak_kib"), med(step, "private", "peak_kib")
print(f"gradient step process peak RSS: non-private {n/1024:.1f} MiB, private {p/1024:.1f} MiB, ratio {p/n:.2f}")
n, p = med(train, "nonprivate", "train_peak_kib"), med(train, "private", "train_peak_kib")
print(f"dpaudit train (fixture, 2 epochs) peak RSS: non-private {n/1024:.1f} MiB, private {p/1024:.1f} MiB, ratio {p/n:.2f}")
PY
