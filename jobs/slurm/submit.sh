#!/usr/bin/env bash
# Submits a sharded dpaudit job to Slurm: an N-task array (KIND-array.sbatch) and the merge
# (KIND-merge.sbatch) as a job that starts only after every array task succeeded.
#
#   jobs/slurm/submit.sh audit|mia [--wait] SPEC OUT N [sbatch options for both jobs...]
#
# SPEC and OUT are made absolute (the jobs run in this folder, which must be on a file system the
# nodes share). Shards go to OUT/shard-0..N-1, the merged result to OUT/merged, Slurm's job logs
# to OUT/slurm-logs. DPAUDIT (default: dpaudit on PATH) names the binary the jobs run.
# Prints the two job ids. With --wait, returns when the merge has ended, with its exit status
# (audit: 0 consistent, 10 violated); if a shard fails the merge is cancelled (exit non-zero).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
usage="usage: submit.sh audit|mia [--wait] SPEC OUT N [sbatch options...]"
kind=${1:?$usage}; shift
case "$kind" in audit | mia) ;; *) echo "$usage" >&2; exit 2 ;; esac
wait=()
if [ "${1:-}" = --wait ]; then wait=(--wait); shift; fi
(($# >= 3)) || { echo "$usage" >&2; exit 2; }
spec=$(realpath -e "$1") || { echo "no spec $1" >&2; exit 2; }
out=$(realpath -m "$2")
n=$3
shift 3
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive integer, got '$n'" >&2; exit 2; }
dpaudit=$(command -v "${DPAUDIT:-dpaudit}") || { echo "dpaudit binary '${DPAUDIT:-dpaudit}' not found (set DPAUDIT)" >&2; exit 2; }
mkdir -p "$out/slurm-logs"
array=$(sbatch --parsable --array="0-$((n - 1))" --output="$out/slurm-logs/$kind-%A_%a.out" \
  --export="ALL,SPEC=$spec,OUT=$out,DPAUDIT=$dpaudit" "$@" "$here/$kind-array.sbatch")
array=${array%%;*}
echo "array job $array: $n shards of $spec -> $out/shard-*"
merge_args=(--dependency="afterok:$array" --kill-on-invalid-dep=yes --output="$out/slurm-logs/$kind-merge-%j.out"
  --export="ALL,OUT=$out,SHARDS=$n,DPAUDIT=$dpaudit" "$@")
merge=$(sbatch --parsable "${merge_args[@]}" "$here/$kind-merge.sbatch")
merge=${merge%%;*}
echo "merge job $merge after $array -> $out/merged"
((${#wait[@]})) || exit 0
# Wait for the merge (polling its state every 2 s: sbatch --wait notices the end seconds later) and return its
# exit status. A merge cancelled because a shard failed never ran: exit 1.
while :; do
  job=$(scontrol show job "$merge" -o 2>/dev/null) || { echo "merge job $merge: state unknown" >&2; exit 1; }
  state=$(grep -o 'JobState=[A-Z_]*' <<<"$job" | cut -d= -f2)
  case "$state" in
    PENDING | CONFIGURING | RUNNING | COMPLETING | SUSPENDED | REQUEUED | RESIZING) sleep 2 ;;
    *) break ;;
  esac
done
rc=$(grep -o 'ExitCode=[0-9]*' <<<"$job" | cut -d= -f2)
echo "merge job $merge: $state, exit status $rc"
case "$state" in
  COMPLETED) exit 0 ;;
  FAILED) exit "$((rc == 0 ? 1 : rc))" ;;
  *) echo "the merge did not complete (a shard failed? see $out/slurm-logs)" >&2; exit 1 ;;
esac
