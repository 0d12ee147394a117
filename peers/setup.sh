#!/usr/bin/env bash
# Creates a Python environment with the peers dpaudit is compared against: Opacus (DP-SGD on
# PyTorch), Google's dp_accounting (RDP and PLD accountants) and Microsoft's prv_accountant,
# at the versions that produced fixtures/golden/ and the throughput figures in BENCHMARKS.md.
#
# Usage (from the repository root): peers/setup.sh [VENV_DIR]      (default: .peers-venv)
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu peers/setup.sh
#     takes torch from PyTorch's CPU-only index (a few hundred MB instead of the CUDA build's GBs);
#     the figures in BENCHMARKS.md were measured on a CPU either way.
#   PYTHON=python3.11 picks the interpreter (default: python3; the fixtures used Python 3.11.7).
# numpy and scipy are pinned to the versions recorded in fixtures/golden/.
set -euo pipefail
venv=${1:-.peers-venv}
python=${PYTHON:-python3}
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
if [[ -n ${TORCH_INDEX_URL:-} ]]; then
    "$venv/bin/pip" install -q torch==2.11.0 --index-url "$TORCH_INDEX_URL"
fi
"$venv/bin/pip" install -q torch==2.11.0 opacus==1.6.0 dp-accounting==0.6.0 prv-accountant==0.2.0 numpy==2.4.6 scipy==1.17.1
"$venv/bin/python" -c 'import importlib.metadata as m; print({p: m.version(p) for p in ["torch", "opacus", "dp-accounting", "prv-accountant", "numpy", "scipy"]})'
echo "peers installed in $venv; e.g. $venv/bin/python peers/peer_epsilon.py 0.01 1.0 1000 1e-5"
