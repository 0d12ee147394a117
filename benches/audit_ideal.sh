#!/usr/bin/env bash
# How close the white-box Dirac audit of correct DP-SGD comes to the ideal bound (issue 5, section
# 3): runs audits/dirac-eps2.toml and audits/dirac-eps8.toml (K = 1,000 per side, threshold fixed
# from the claim) with SEEDS different audit seeds each, and prints every achieved bound, the ideal,
# and the median fraction. Release binary, all cores.
# Usage: benches/audit_ideal.sh [SEEDS]   (default 10; about 30 s per audit here)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-10}
cargo build --release --quiet
mkdir -p runs/audit-ideal
for spec in audits/dirac-eps2.toml audits/dirac-eps8.toml; do
  name=$(basename "$spec" .toml)
  for seed in $(seq 1 "$SEEDS"); do
    s=runs/audit-ideal/$name-seed$seed.toml
    sed -e "s/^seed = .*/seed = $seed/" "$spec" > "$s"
    target/release/dpaudit audit run "$s" --out "runs/audit-ideal/$name-seed$seed" --allow-inconclusive > /dev/null 2>&1 || true
  done
done
python3 - "$SEEDS" <<'PY'
import json, statistics, sys
seeds = int(sys.argv[1])
for name in ["dirac-eps2", "dirac-eps8"]:
    rows = [json.load(open(f"runs/audit-ideal/{name}-seed{s}/audit.json")) for s in range(1, seeds + 1)]
    lbs = [r["epsilon_lower"] for r in rows]
    ideal = rows[0]["ideal_epsilon_lower"]
    fr = [lb / ideal for lb in lbs]
    print(f"{name}: claim {rows[0]['claim']['epsilon']:.4f}, K = {rows[0]['runs_per_side']}, ideal {ideal:.4f}; "
          f"achieved {' '.join(f'{x:.3f}' for x in lbs)}; median {statistics.median(lbs):.4f} "
          f"= {statistics.median(fr):.2f} of ideal (min {min(fr):.2f}, max {max(fr):.2f}); "
          f"verdicts {sorted(set(r['verdict'] for r in rows))}")
PY
