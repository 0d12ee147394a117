#!/usr/bin/env bash
# External-trainer audits (docs/external-trainers.md, audits/external/), four parts:
#   a) the no-bug plain-PyTorch DP-SGD audit (audits/external/plain-dpsgd.toml) for SEEDS seeds
#      (default 20) at K_CLEAN runs per side (default 1000), counting `consistent` verdicts;
#   b) each planted bug (audits/external/plain-dpsgd-*.toml) at K_BUG runs per side (default 1000,
#      at most 1000), each expected `violated`;
#   c) the Opacus recipes (audits/external/opacus-*.toml) at K_OPACUS runs per side (default: each
#      spec's own), with wall time;
#   d) runs per second of the no-bug recipe in worker mode and in once mode (K_SPEED per side,
#      default 50), i.e. with and without a long-lived trainer process.
# Usage: benches/external_audits.sh [a] [b] [c] [d]   (default: all four)
# Env: DPAUDIT (default: cargo's release binary), OUT (default runs/external-audits),
#      DATASET (replaces the specs' `dataset = "fixture"`: mnist, fashion-mnist or an IDX folder).
# Writes $OUT/summary.tsv (part, spec, seed, K, verdict, epsilon_lower, claimed, seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-20}
K_CLEAN=${K_CLEAN:-1000}
K_BUG=${K_BUG:-1000}
K_SPEED=${K_SPEED:-50}
OUT=${OUT:-runs/external-audits}
if [ -z "${DPAUDIT:-}" ]; then
  cargo build --release --quiet
  DPAUDIT=target/release/dpaudit
fi
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(a b c d)
mkdir -p "$OUT"
summary="$OUT/summary.tsv"
[ -f "$summary" ] || printf 'part\tspec\tseed\tK\tverdict\tepsilon_lower\tclaimed\tseconds\n' > "$summary"

# variant SPEC NAME SEED K [MODE]: writes a copy of SPEC with name, seed, K (and mode) replaced.
variant() {
  local spec=$1 name=$2 seed=$3 k=$4 mode=${5:-}
  local file="$OUT/$name.toml"
  sed -e "s/^name = .*/name = \"$name\"/" -e "s/^seed = .*/seed = $seed/" \
      ${k:+-e "s/^runs_per_side = .*/runs_per_side = $k/"} \
      ${DATASET:+-e "s|^dataset = \"fixture\"|dataset = \"$DATASET\"|"} "$spec" > "$file"
  if [ "$mode" = once ]; then
    sed -i -e 's/^mode = .*/mode = "once"/' -e 's/"--worker"\]/"--request", "{request}"]/' "$file"
  fi
  echo "$file"
}
# audit PART SPECFILE SEED: runs it (audit run resumes an interrupted folder), appends a summary row, echoes the exit status.
audit() {
  local part=$1 spec=$2 seed=$3 dir="$OUT/$(basename "$2" .toml)"
  local start end rc
  start=$(date +%s.%N)
  set +e
  "$DPAUDIT" audit run "$spec" --out "$dir" > "$dir.txt" 2>&1  # resumes a folder with runs of the same spec
  rc=$?
  set -e
  end=$(date +%s.%N)
  if [ ! -f "$dir/audit.json" ]; then
    echo "$(basename "$spec"): no audit.json (exit $rc); see $dir.txt" >&2
    echo "$rc"
    return
  fi
  python3 - "$dir/audit.json" "$part" "$(basename "$spec" .toml)" "$seed" "$start" "$end" >> "$summary" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4], str(a["spec"]["attack"]["runs_per_side"]), a["verdict"],
                 f'{a["epsilon_lower"]:.4f}', f'{a["claim"]["epsilon"]:.4f}', f'{float(sys.argv[6]) - float(sys.argv[5]):.1f}']))
PY
  tail -n 1 "$summary" >&2
  echo "$rc"
}

for part in "${parts[@]}"; do
  case $part in
  a)
    consistent=0
    for seed in $(seq 1 "$SEEDS"); do
      rc=$(audit a "$(variant audits/external/plain-dpsgd.toml "plain-dpsgd-K$K_CLEAN-seed$seed" "$seed" "$K_CLEAN")" "$seed")
      [ "$rc" = 0 ] && consistent=$((consistent + 1))
    done
    echo "a) plain-dpsgd, no bug, K = $K_CLEAN: consistent in $consistent of $SEEDS seeded audits"
    ;;
  b)
    [ "$K_BUG" -le 1000 ] || { echo "K_BUG must be at most 1000" >&2; exit 2; }
    for spec in audits/external/plain-dpsgd-*.toml; do
      name=$(basename "$spec" .toml)
      rc=$(audit b "$(variant "$spec" "$name-K$K_BUG" 1 "$K_BUG")" 1)
      if [ "$rc" = 10 ]; then echo "b) $name at K = $K_BUG: violated"; else echo "b) $name at K = $K_BUG: NOT violated (exit $rc)"; fi
    done
    ;;
  c)
    for spec in audits/external/opacus-*.toml; do
      name=$(basename "$spec" .toml)
      rc=$(audit c "$(variant "$spec" "$name${K_OPACUS:+-K$K_OPACUS}" 1 "${K_OPACUS:-}")" 1)
      echo "c) $name: exit $rc ($(tail -n 1 "$summary" | cut -f5-8 | tr '\t' ' '))"
    done
    ;;
  d)
    for mode in worker once; do
      spec=$(variant audits/external/plain-dpsgd.toml "plain-dpsgd-speed-$mode-K$K_SPEED" 1 "$K_SPEED" "$mode")
      rm -rf "$OUT/$(basename "$spec" .toml)"
      start=$(date +%s.%N)
      audit d "$spec" 1 > /dev/null
      end=$(date +%s.%N)
      python3 -c "import sys; k=int(sys.argv[1]); s=float(sys.argv[3])-float(sys.argv[2]); print(f'd) {sys.argv[4]} mode: {2*k} runs in {s:.1f} s: {2*k/s:.2f} runs/s')" "$K_SPEED" "$start" "$end" "$mode"
    done
    ;;
  *) echo "unknown part $part (a, b, c or d)" >&2; exit 2 ;;
  esac
done
echo "summary: $summary"
