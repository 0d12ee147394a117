#!/usr/bin/env bash
# Prints dpaudit's and the peers' accountants side by side, from one run: epsilon and seconds per
# call for dpaudit's RDP and PLD against Google's dp_accounting RDP and PLD (value discretisation
# 1e-4) and Opacus' RDP. The two sides are run in interleaved rounds and the medians compared,
# since single short runs vary by +-30% on shared machines.
# Usage: benches/compare_accountants.sh [ROUNDS] [Q SIGMA STEPS DELTA]
# Needs the peers: peers/setup.sh (creates .peers-venv), or PEERS_PY=path/to/their/python.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
q=${2:-0.0042666667} sigma=${3:-1.1} steps=${4:-10000} delta=${5:-1e-5}
py=${PEERS_PY:-.peers-venv/bin/python}
[ -x "$py" ] || { echo "peers not installed: run peers/setup.sh (or set PEERS_PY)" >&2; exit 1; }
cargo build --release --quiet --example accountant_timing
ours=target/release/examples/accountant_timing
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for r in $(seq "$rounds"); do
  "$ours" "$q" "$sigma" "$steps" "$delta" 3 >> "$tmp/ours.jsonl"
  "$py" benches/peers_timing.py "$q" "$sigma" "$steps" "$delta" 3 >> "$tmp/peers.jsonl"
  echo "round $r/$rounds done" >&2
done
python3 - "$tmp/ours.jsonl" "$tmp/peers.jsonl" <<'PY'
import json, statistics, sys
rows = {}
for path in sys.argv[1:]:
    for line in open(path):
        d = json.loads(line)
        for k, v in d.items():
            if isinstance(v, dict):
                rows.setdefault(k, {"eps": v["epsilon"], "sec": []})["sec"].append(v["seconds"])
med = {k: statistics.median(v["sec"]) for k, v in rows.items()}
print(f"{'accountant':<14}{'epsilon':>14}{'median s/call':>16}")
for k, v in rows.items():
    print(f"{k:<14}{v['eps']:>14.6f}{med[k]:>16.3e}")
print()
print(f"RDP speed-up vs Google dp_accounting: {med['google_rdp'] / med['dpaudit_rdp']:.1f}x (target >= 10x)")
print(f"RDP speed-up vs Google's get_epsilon alone on an already composed curve: {med['google_rdp_conversion_only'] / med['dpaudit_rdp']:.1f}x")
print(f"RDP speed-up vs Opacus:              {med['opacus_rdp'] / med['dpaudit_rdp']:.1f}x")
print(f"PLD speed-up vs Google dp_accounting: {med['google_pld'] / med['dpaudit_pld']:.1f}x (target >= 3x)")
print(f"PLD epsilon vs Google: {100 * (rows['dpaudit_pld']['eps'] / rows['google_pld']['eps'] - 1):+.3f}% (bar: -0.5% .. +1%)")
print(f"RDP epsilon vs Google: {100 * (rows['dpaudit_rdp']['eps'] / rows['google_rdp']['eps'] - 1):+.4f}%, vs Opacus: {100 * (rows['dpaudit_rdp']['eps'] / rows['opacus_rdp']['eps'] - 1):+.4f}% (bar: within 0.1%)")
PY
