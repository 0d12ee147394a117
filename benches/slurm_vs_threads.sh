#!/usr/bin/env bash
# What Slurm costs on one machine: the same audit as a 2-shard Slurm array job plus its dependent
# merge (jobs/slurm/submit-audit.sh --wait, one thread per shard) against one process with
# --threads 2, end to end (spec in, merged audit.json out). Starts its own single-node cluster
# (scripts/slurm/start-cluster.sh: needs root and slurm-wlm + munge) and stops it at the end.
# Rounds are interleaved (threads, then Slurm, REPEATS times); prints each time, the medians and
# their ratio, and checks that every Slurm result equals the single process's (timings aside).
#
# Usage: benches/slurm_vs_threads.sh [K]    (K runs per side of audits/dirac-eps2.toml; default 300)
# Environment: REPEATS (default 3); DPAUDIT (the binary; default: a release build).
set -euo pipefail
cd "$(dirname "$0")/.."
K=${1:-300}
REPEATS=${REPEATS:-3}
if [ -z "${DPAUDIT:-}" ]; then
  cargo build --release --quiet
  DPAUDIT=target/release/dpaudit
fi
DPAUDIT=$(realpath "$DPAUDIT")
export DPAUDIT
work=$(mktemp -d)
chmod 0755 "$work" # the munge user must reach the cluster folder in it
cluster="$work/cluster"
trap 'scripts/slurm/stop-cluster.sh "$cluster"; rm -rf "$work"' EXIT
scripts/slurm/start-cluster.sh "$cluster"
export SLURM_CONF="$cluster/slurm.conf"
spec="$work/spec.toml"
sed -e "s/^runs_per_side = .*/runs_per_side = $K/" -e 's/^name = .*/name = "dirac-eps2-slurm-bench"/' \
  audits/dirac-eps2.toml >"$spec"

# Runs "$@" quietly; prints its wall seconds. Exit 10 (violated) is a result, not a failure.
timed() {
  local start end rc=0
  start=$(date +%s.%N)
  "$@" >"$work/last.log" 2>&1 || rc=$?
  end=$(date +%s.%N)
  if [ $rc -ne 0 ] && [ $rc -ne 10 ]; then
    cat "$work/last.log" >&2
    echo "failed ($rc): $*" >&2
    exit 1
  fi
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
}
# audit.json without the timing fields and without `record_check` (the records replayed after the
# runs are drawn from OS entropy in each process), for the equality check.
strip() {
  python3 -c '
import json, sys
def clean(v):
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items() if k not in ("seconds", "run_seconds", "wall_seconds", "record_check")}
    if isinstance(v, list):
        return [clean(x) for x in v]
    return v
print(json.dumps(clean(json.load(open(sys.argv[1]))), indent=1, sort_keys=True))' "$1"
}

printf 'round\tthreads_2_s\tslurm_2_shards_s\tratio\n'
threads=()
slurm=()
ratios=()
for r in $(seq "$REPEATS"); do
  t=$(timed "$DPAUDIT" audit run "$spec" --out "$work/threads-$r" --threads 2)
  s=$(timed jobs/slurm/submit-audit.sh --wait "$spec" "$work/slurm-$r" 2)
  diff <(strip "$work/threads-$r/audit.json") <(strip "$work/slurm-$r/merged/audit.json") >/dev/null ||
    { echo "round $r: the Slurm result differs from the single process's" >&2; exit 1; }
  threads+=("$t")
  slurm+=("$s")
  ratios+=("$(awk -v s="$s" -v t="$t" 'BEGIN { print s / t }')")
  printf '%s\t%.2f\t%.2f\t%.3f\n' "$r" "$t" "$s" "${ratios[-1]}"
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
mt=$(median "${threads[@]}")
ms=$(median "${slurm[@]}")
printf 'K = %s per side (%s runs), %s interleaved rounds on %s cores: median %.2f s with --threads 2, %.2f s as a 2-shard Slurm array + merge; median of the rounds'"'"' ratios slurm/threads = %.3f\n' \
  "$K" $((2 * K)) "$REPEATS" "$(nproc)" "$mt" "$ms" "$(median "${ratios[@]}")"
