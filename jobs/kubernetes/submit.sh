#!/usr/bin/env bash
# Runs a sharded dpaudit job on Kubernetes: KIND-shards.yaml (an indexed Job, one pod per shard),
# then, once every index has succeeded, KIND-merge.yaml. Kubernetes has no dependencies between
# Jobs, so this script waits for the first and applies the second.
#
#   IMAGE=registry/dpaudit:TAG jobs/kubernetes/submit.sh audit|mia SPEC N [TIMEOUT_SECONDS]
#
# SPEC goes into the ConfigMap dpaudit-KIND-spec (mounted at /spec); shards and the merged result
# go to /data/runs/dpaudit-KIND/{shard-i,merged} on the PersistentVolumeClaim dpaudit-data, which
# must exist (ReadWriteMany). A previous Job object of the same name is deleted first (not its
# data: re-running resumes every shard). Uses the current kubectl context and namespace.
# Exit status: 0 when the merge completed; 1 when the shards or the merge failed (for an audit, a
# merge that fails with exit status 10 is the verdict `violated`: see audit.json), or on timeout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
usage="usage: IMAGE=... submit.sh audit|mia SPEC N [TIMEOUT_SECONDS]"
kind=${1:?$usage}
spec=${2:?$usage}
n=${3:?$usage}
timeout=${4:-86400}
case "$kind" in audit | mia) ;; *) echo "$usage" >&2; exit 2 ;; esac
: "${IMAGE:?set IMAGE to an image with dpaudit on PATH}"
[ -f "$spec" ] || { echo "no spec $spec" >&2; exit 2; }
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive integer, got '$n'" >&2; exit 2; }
command -v kubectl >/dev/null || { echo "kubectl not found" >&2; exit 2; }

# The manifest with the image and N (the lines marked "# shards") filled in.
manifest() {
  sed -E -e "s|image: IMAGE|image: $IMAGE|" \
    -e "s/^( *(completions|parallelism): )[0-9]+( # shards)/\1$n\3/" \
    -e "s/^( *value: )\"[0-9]+\"( # shards)/\1\"$n\"\2/" "$here/$1"
}
# Waits until job $1 has the condition Complete (returns 0) or Failed (returns 1).
wait_job() {
  local deadline=$((SECONDS + timeout)) state
  while ((SECONDS < deadline)); do
    state=$(kubectl get job "$1" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type} {end}')
    case " $state " in
      *" Complete "*) return 0 ;;
      *" Failed "*) echo "job $1 failed: kubectl describe job $1" >&2; return 1 ;;
    esac
    sleep 10
  done
  echo "job $1 not finished after ${timeout}s" >&2
  return 1
}

case "$kind" in audit) file=audit.toml ;; mia) file=mia.toml ;; esac
kubectl create configmap "dpaudit-$kind-spec" --from-file="$file=$spec" --dry-run=client -o yaml | kubectl apply -f -
kubectl delete job "dpaudit-$kind" "dpaudit-$kind-merge" --ignore-not-found
manifest "$kind-shards.yaml" | kubectl apply -f -
echo "indexed job dpaudit-$kind: $n shards; waiting for every index" >&2
wait_job "dpaudit-$kind"
manifest "$kind-merge.yaml" | kubectl apply -f -
wait_job "dpaudit-$kind-merge"
echo "merged: /data/runs/dpaudit-$kind/merged on the claim dpaudit-data" >&2
