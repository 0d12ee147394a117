#!/usr/bin/env bash
# Audit engine throughput: K + K replays of audits/dirac-eps2.toml (default K = 5000, the issue's
# "5,000 + 5,000 logreg replays on the fixture in at most 15 minutes on 2 cores"), all cores, with
# the release binary. Prints wall time, runs per second, and the audit's result.
# Usage: benches/audit_throughput.sh [K]
set -euo pipefail
cd "$(dirname "$0")/.."
K=${1:-5000}
cargo build --release --quiet
out=runs/bench-throughput-$K
rm -rf "$out"
spec=$(mktemp --suffix=.toml)
sed -e "s/^runs_per_side = .*/runs_per_side = $K/" -e 's/^name = .*/name = "dirac-eps2-throughput"/' audits/dirac-eps2.toml > "$spec"
start=$(date +%s.%N)
set +e
target/release/dpaudit audit run "$spec" --out "$out"
rc=$?
set -e
end=$(date +%s.%N)
python3 - "$start" "$end" "$K" "$out/audit.json" "$(nproc)" <<'PY'
import json, sys
start, end, k, path, cores = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
a = json.load(open(path))
wall = end - start
print(f"{2*k} replays in {wall:.1f} s wall on {cores} cores: {2*k/wall:.1f} replays/s "
      f"(median run {sorted(r['seconds'] for r in a['runs'])[len(a['runs'])//2]*1000:.1f} ms on one core); "
      f"epsilon_lower {a['epsilon_lower']:.4f}, ideal {a['ideal_epsilon_lower']:.4f} for K = {a['runs_per_side']}")
PY
rm -f "$spec"
exit $([ $rc -eq 0 ] || [ $rc -eq 10 ] && echo 0 || echo $rc)
