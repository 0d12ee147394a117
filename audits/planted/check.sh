#!/usr/bin/env bash
# Checks the planted audits both ways:
#   1. each audits/planted/*.toml (a deliberate bug) must come out `violated` (exit 10);
#   2. the same spec with its `inject_fault` line removed must come out `consistent` (exit 0) in at
#      least 19 of REPEATS (default 20) seeded repeats (seed = 1..REPEATS).
# Usage: audits/planted/check.sh [SPEC...]   (default: every planted spec)
# Env: REPEATS (default 20), OUT (default runs/planted-check), DPAUDIT (default: cargo's release binary).
# Writes $OUT/summary.tsv. Each audit resumes if interrupted (re-run the script).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPEATS=${REPEATS:-20}
OUT=${OUT:-runs/planted-check}
if [ -z "${DPAUDIT:-}" ]; then
  cargo build --release --quiet
  DPAUDIT=target/release/dpaudit
fi
mkdir -p "$OUT"
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(audits/planted/*.toml)
summary="$OUT/summary.tsv"
printf 'spec\tfault\tseed\tverdict\tepsilon_lower\tclaimed\tseconds\n' > "$summary"
row() { # dir spec fault seed
  python3 - "$1/audit.json" "$2" "$3" "$4" >> "$summary" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4], a["verdict"], f'{a["epsilon_lower"]:.4f}', f'{a["claim"]["epsilon"]:.4f}', f'{a["wall_seconds"]:.0f}']))
PY
}
fail=0
for spec in "${specs[@]}"; do
  name=$(basename "$spec" .toml)
  dir="$OUT/$name-planted"
  set +e; "$DPAUDIT" audit run "$spec" --out "$dir" > "$dir.txt" 2>&1; rc=$?; set -e
  [ -f "$dir/audit.json" ] || { echo "$name: no audit.json (rc $rc); see $dir.txt"; exit 1; }
  row "$dir" "$name" "planted" "1"
  if [ $rc -ne 10 ]; then echo "FAIL $name: the planted bug was not caught"; fail=1; else echo "ok   $name: violated"; fi
  consistent=0
  for seed in $(seq 1 "$REPEATS"); do
    clean="$OUT/$name-clean-$seed.toml"
    sed -e '/^inject_fault/d' -e "s/^seed = .*/seed = $seed/" "$spec" > "$clean"
    d="$OUT/$name-clean-$seed"
    set +e; "$DPAUDIT" audit run "$clean" --out "$d" > "$d.txt" 2>&1; rc=$?; set -e
    [ -f "$d/audit.json" ] || { echo "$name seed $seed: no audit.json (rc $rc); see $d.txt"; exit 1; }
    row "$d" "$name" "none" "$seed"
    [ $rc -eq 0 ] && consistent=$((consistent + 1))
  done
  if [ $consistent -ge $((REPEATS - REPEATS / 20)) ]; then echo "ok   $name without the bug: consistent in $consistent of $REPEATS"; else echo "FAIL $name without the bug: consistent in only $consistent of $REPEATS"; fail=1; fi
done
echo "summary: $summary"
exit $fail
