#!/usr/bin/env bash
# Sets up everything dpaudit needs on a fresh Debian machine, then builds it. Safe to re-run:
# each step is skipped when it is already done.
#   1. Debian packages: GMP/MPFR headers (for `rug`, the arbitrary-precision oracle), a C++ compiler,
#      Fashion-MNIST (`dataset-fashion-mnist`, the source of `dpaudit data fetch fashion-mnist`),
#      `chromium`, the headless browser tests/report_browser.rs renders the HTML report with, and
#      `slurm-wlm` and `munge`, the single-node Slurm cluster tests/slurm_cluster.rs submits jobs to
#      (scripts/slurm/start-cluster.sh; the packages' own services are not used).
#   2. A project-local Python environment `.venv` holding PyTorch 2.11.0 (libtorch for `tch` 0.24),
#      and the external-trainer adapters' packages (adapters/): Opacus 1.6.0, safetensors, NumPy.
#   3. `.libtorch`, a link to that libtorch, which `.cargo/config.toml` points LIBTORCH at.
#   4. `cargo build` (pass --release to build the optimised binary instead).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=2.11.0
OPACUS_VERSION=1.6.0
say() { printf '[setup] %s\n' "$*" >&2; }

# 1. Debian packages.
need=()
for pkg in libgmp-dev libmpfr-dev g++ python3-venv dataset-fashion-mnist chromium slurm-wlm munge; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
# python3-venv is only needed when the system python lacks the venv module.
if python3 -c 'import venv, ensurepip' 2>/dev/null; then
  need=("${need[@]/python3-venv}")
fi
need=($(printf '%s\n' "${need[@]}" | grep -v '^$' || true))
if ((${#need[@]})); then
  say "installing Debian packages: ${need[*]}"
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { say "need root (or sudo) to install: ${need[*]}"; exit 1; }
    sudo_cmd="sudo"
  fi
  $sudo_cmd apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q "${need[@]}" >/dev/null
fi

# 2. PyTorch in a project-local environment.
if ! .venv/bin/python -W ignore -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  say "creating .venv with torch==$TORCH_VERSION from PyPI (about 5 GB, a few minutes)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "torch==$TORCH_VERSION"
fi

# The adapters' packages, after torch so that pip keeps the torch installed above.
if ! .venv/bin/python -W ignore -c "import opacus, safetensors, numpy, sys; sys.exit(opacus.__version__ != '$OPACUS_VERSION')" 2>/dev/null; then
  say "installing opacus==$OPACUS_VERSION, safetensors, numpy into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "opacus==$OPACUS_VERSION" safetensors numpy "torch==$TORCH_VERSION"
fi

# 3. The libtorch link that .cargo/config.toml names.
torch_dir=$(.venv/bin/python -W ignore -c 'import torch, os; print(os.path.dirname(torch.__file__))')
if [ "$(readlink .libtorch 2>/dev/null)" != "$torch_dir" ]; then
  ln -sfn "$torch_dir" .libtorch
  say "linked .libtorch -> $torch_dir"
fi

# 4. Build.
say "building (cargo build $*)"
cargo build --quiet "$@"
