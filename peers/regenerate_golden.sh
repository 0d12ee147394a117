#!/usr/bin/env bash
# Regenerates the golden fixtures that the accountant tests compare against, from the peers:
#   fixtures/golden/peer_epsilons.json  (Opacus RDP and PRV, Google dp_accounting RDP and PLD)
#   fixtures/golden/pld_google.json     (Google dp_accounting PLD and RDP)
# Usage (from anywhere): peers/regenerate_golden.sh [OUT_DIR]   (default: fixtures/golden)
#   Write to another folder and diff it against fixtures/golden/ to check the committed numbers.
#   PEERS_PY=path/to/python selects the peers' interpreter (default: .peers-venv/bin/python,
#   created by peers/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PEERS_PY:-.peers-venv/bin/python}
[[ -x $py ]] || { echo "peers not installed: run peers/setup.sh (or set PEERS_PY)" >&2; exit 1; }
out=${1:-fixtures/golden}
"$py" peers/regenerate_golden.py "$out"
