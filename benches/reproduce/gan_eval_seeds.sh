#!/usr/bin/env bash
# How much of a CAS figure is the evaluator's own seed: re-evaluate released synthetic sets with
# other seeds of `dpaudit evaluate synthetic` (the CAS classifier's initialisation and shuffling;
# same protocol: CAS_EPOCHS epochs, default 5, epoch chosen on the last 5,000 real training
# images, tested on the 10,000 real test images) and print, per release, the test CAS of every
# seed with their mean and sample standard deviation.
#
#   benches/reproduce/gan_eval_seeds.sh OUT "SEEDS" NAME...
#
# OUT is a gan_mnist.sh output folder, NAME a release in it (`default` for OUT/synth, otherwise
# OUT/synth-NAME), SEEDS e.g. "0 1 2"; seed 0 is the seed the other scripts use, and its existing
# report (OUT/eval.json or OUT/eval-NAME.json) is reused when present. Writes
# OUT/eval-seeds/NAME-sS.json. DATA is the real data folder (default data/mnist).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?gan_mnist.sh output folder}
SEEDS=${2:?seeds, e.g. "0 1 2"}
shift 2
[[ $# -gt 0 ]] || { echo "name at least one release (default, or NAME of OUT/synth-NAME)" >&2; exit 2; }
DATA=${DATA:-data/mnist}
if [[ -z "${BIN:-}" ]]; then
    cargo build --release --quiet
    BIN=target/release/dpaudit
fi
mkdir -p "$OUT/eval-seeds"
for name in "$@"; do
    if [[ $name == default ]]; then synth=$OUT/synth; base=$OUT/eval.json; else synth=$OUT/synth-$name; base=$OUT/eval-$name.json; fi
    [[ -d $synth ]] || { echo "no release $synth" >&2; exit 2; }
    reports=()
    for s in $SEEDS; do
        report=$OUT/eval-seeds/$name-s$s.json
        if [[ $s == 0 && -f $base && ${CAS_EPOCHS:-5} == 5 ]]; then
            cp "$base" "$report"
        elif [[ ! -f $report ]]; then
            $BIN evaluate synthetic --synthetic "$synth" --real "$DATA" --cas-epochs "${CAS_EPOCHS:-5}" --seed "$s" \
                --threads "${THREADS:-2}" --json > "$report.tmp"
            mv "$report.tmp" "$report"
        fi
        reports+=("$report")
    done
    python3 - "$name" "${reports[@]}" <<'PY'
import json, statistics, sys
name, paths = sys.argv[1], sys.argv[2:]
cas = [json.load(open(p))["cas"]["test_accuracy"] for p in paths]
sd = statistics.stdev(cas) if len(cas) > 1 else float("nan")
print(f"{name}: CAS per evaluator seed {' '.join(f'{c:.4f}' for c in cas)}; mean {statistics.mean(cas):.4f}, sd {sd:.4f}")
PY
done
