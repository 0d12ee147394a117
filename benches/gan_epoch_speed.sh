#!/usr/bin/env bash
# Side-by-side speed of the private GAN's training: two dpaudit binaries (say, before and after a
# change) each train one epoch of the DP-GAN on real MNIST, alternately, ROUNDS times; prints each
# run's wall time and the medians, and the ratio B / A of the medians (below 1: B is faster).
#
#   benches/gan_epoch_speed.sh BIN_A BIN_B [ROUNDS] [DATA]
#
# DATA is the MNIST folder (default: the DATA variable, else data/mnist; fill it with
# `dpaudit data fetch mnist --dir data/mnist`).
#
# The settings are those of benches/reproduce/gan_mnist.sh with the classifier discriminator
# (design (b), lot 128, C = 1, n_critic 10, 2 threads, seed 1), with a fixed noise multiplier (2.47)
# so that no calibration runs: one epoch = 469 discriminator steps and 47 generator steps. Single
# runs vary by +-30% on shared machines: compare the medians of one invocation, never figures
# from different invocations. Nothing else should run beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
A=${1:?binary A}
B=${2:?binary B}
ROUNDS=${3:-3}
DATA=${4:-${DATA:-data/mnist}}
[[ -e "$DATA/train-images-idx3-ubyte.gz" || -e "$DATA/train-images-idx3-ubyte" ]] || {
    echo "no MNIST in $DATA: pass its folder as DATA (4th argument), or run dpaudit data fetch mnist --dir data/mnist" >&2
    exit 1
}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
one() {
    local bin=$1
    local t0 t1
    t0=$(date +%s.%N)
    "$bin" gan train --dataset mnist --data-dir "$DATA" --design joint --noise-multiplier 2.47 --delta 1e-5 \
        --epochs 1 --lot-size 128 --max-grad-norm 1 --n-critic 10 --conditioning classifier --seed 1 \
        --threads 2 --force --out "$out/run" > /dev/null 2> "$out/stderr" || {
        # A failed run must not be timed: show why and stop (the assignment below then fails).
        echo "$bin failed:" >&2
        tail -5 "$out/stderr" >&2
        return 1
    }
    t1=$(date +%s.%N)
    python3 -c "print(f'{$t1 - $t0:.2f}')"
}
a_times=()
b_times=()
for r in $(seq 1 "$ROUNDS"); do
    a=$(one "$A")
    b=$(one "$B")
    echo "round $r: A $a s, B $b s"
    a_times+=("$a")
    b_times+=("$b")
done
python3 - "${a_times[*]}" "${b_times[*]}" <<'PY'
import statistics, sys
a = [float(x) for x in sys.argv[1].split()]
b = [float(x) for x in sys.argv[2].split()]
ma, mb = statistics.median(a), statistics.median(b)
print(f"median seconds per epoch: A {ma:.2f}, B {mb:.2f}; B / A = {mb / ma:.3f}")
PY
