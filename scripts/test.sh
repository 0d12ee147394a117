#!/usr/bin/env bash
# README command 2: set everything up, then run the whole test suite (unit, integration, property
# and doc tests). CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Formatting is part of the suite (rustfmt.toml).
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo fmt --all --check
# So is clippy: every lint is an error.
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
cargo clippy --workspace --all-targets -- -D warnings
# The core crate (accountants, ledger, certificates, reports) must not depend on libtorch.
if cargo tree -p dpaudit-core -e normal --prefix none | grep -E "^(tch|torch-sys) "; then
    echo "error: dpaudit-core depends on libtorch" >&2
    exit 1
fi
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc
